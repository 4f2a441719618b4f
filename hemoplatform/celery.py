"""The Celery app and the one task decorator of the project.

Start a worker with ``celery -A hemoplatform worker`` (consumes the ``cpu`` queue); GPU machines run
``celery -A hemoplatform worker -Q gpu --concurrency=1 --prefetch-multiplier=1`` and the web side sets
``HEMO_PREDICTION_QUEUE=gpu``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hemoplatform.settings.local")

app = Celery("hemoplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
logger = logging.getLogger(__name__)


@worker_process_init.connect
def import_the_model_code(**kwargs: Any) -> None:
    """Each worker child imports torch and the model code when it starts (after the fork, so the parent never holds
    torch), outside any task's time limit: a soft time limit that stopped the first import half-way left a broken
    torch in that child, and every later prediction it ran failed. The predictor itself is still built on first
    use (inference.predictor.get_predictor), for the model version a task asks for."""
    try:
        import torch  # noqa: F401

        import ml.model  # noqa: F401
        import ml.predict  # noqa: F401
        import ml.train  # noqa: F401
    except Exception:  # noqa: BLE001 - the worker still runs; each prediction then fails with its own message
        logger.exception("Importing the model code in a worker child failed")


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
