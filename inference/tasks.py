"""Celery tasks: thin shells over inference.services."""

from __future__ import annotations

from django.conf import settings

from hemoplatform.celery import hemo_task
from inference.models import PredictionStatus
from inference.services import prediction_requeue_stale, prediction_run


@hemo_task()
def run_prediction(*, prediction_id: str) -> str:
    """Run one queued prediction (idempotent: a finished or freshly running prediction is left alone).

    Routed to HEMO_PREDICTION_QUEUE ("cpu" by default, "gpu" for GPU workers). Returns the final status.
    When the prediction is running elsewhere, a check is scheduled for when that run would be stale: if the other
    worker died (or was killed at the hard time limit), the job is then taken over instead of staying "running".
    """
    prediction = prediction_run(prediction_id=prediction_id, task_id=run_prediction.request.id or "")
    if prediction is None:
        return "missing"
    if prediction.status == PredictionStatus.RUNNING:
        run_prediction.apply_async(
            kwargs={"prediction_id": str(prediction_id)}, countdown=settings.HEMO_PREDICTION_STALE_AFTER_S + 5
        )
    return prediction.status


@hemo_task()
def requeue_stale_predictions() -> int:
    """Celery beat's periodic sweep (settings.CELERY_BEAT_SCHEDULE): enqueue again the predictions whose message
    may be lost (queued longer than HEMO_REQUEUE_QUEUED_FOR_S, or running past the hard limit). Returns how many."""
    return len(prediction_requeue_stale(queued_for_s=settings.HEMO_REQUEUE_QUEUED_FOR_S))
