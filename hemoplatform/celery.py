"""The Celery app and the one task decorator of the project.

Start a worker with ``celery -A hemoplatform worker`` (consumes the ``cpu`` queue); GPU machines run
``celery -A hemoplatform worker -Q gpu --concurrency=1 --prefetch-multiplier=1`` and the web side sets
``HEMO_PREDICTION_QUEUE=gpu``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hemoplatform.settings.local")

app = Celery("hemoplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _transient_errors() -> tuple[type[BaseException], ...]:
    # Errors worth retrying: the database or the broker went away for a moment. Anything else is a real failure
    # that the service records on the row, so retrying would only repeat it.
    from django.db import InterfaceError, OperationalError
    from kombu.exceptions import OperationalError as BrokerOperationalError

    return (OperationalError, InterfaceError, BrokerOperationalError, ConnectionError, TimeoutError)


def route_task(name: str, args: Any, kwargs: Any, options: dict, task: Any = None, **kw: Any) -> dict | None:
    """Send inference tasks to the prediction queue read from settings at send time (tests may override it)."""
    if name.startswith("inference."):
        from django.conf import settings

        return {"queue": settings.HEMO_PREDICTION_QUEUE}
    return None


def hemo_task(
    *,
    queue: str | None = None,
    max_retries: int = 3,
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
    **options: Any,
) -> Callable:
    """The project's task decorator.

    acks_late + reject_on_worker_lost: a message is acknowledged only after the task returns, so a worker that dies
    mid-task leaves the job to be redelivered (tasks must therefore be idempotent: lock the row, check its status).
    Transient database/broker errors are retried a bounded number of times with exponential backoff.
    ``queue`` pins a queue; by default ``route_task`` decides (inference -> HEMO_PREDICTION_QUEUE).
    """
    from django.conf import settings

    if queue is not None:
        options["queue"] = queue
    return app.task(
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=_transient_errors(),
        max_retries=max_retries,
        retry_backoff=True,
        retry_backoff_max=120,
        retry_jitter=True,
        soft_time_limit=soft_time_limit or settings.HEMO_TASK_SOFT_TIME_LIMIT,
        time_limit=time_limit or settings.HEMO_TASK_TIME_LIMIT,
        **options,
    )
