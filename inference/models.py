from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from scans.models import Scan, Slice, private_storage


class ModelVersion(models.Model):
    """A trained model artifact (``model.pt`` + ``metadata.json``) registered by ``manage.py register_model``.

    Immutable once predictions use it (Prediction.model_version is PROTECT); ``sha256`` covers ``model.pt`` and
    ``metadata.json`` together.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    sha256 = models.CharField(max_length=64, unique=True)
    threshold = models.FloatField()
    metrics = models.JSONField(default=dict, blank=True)
    card = models.JSONField(default=dict, blank=True)  # the whole metadata.json
    # Folder holding model.pt and metadata.json; relative paths are relative to the repository root.
    path = models.CharField(max_length=500)
    is_active = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.sha256[:12]})"

    @property
    def directory(self) -> Path:
        path = Path(self.path)
        return path if path.is_absolute() else settings.BASE_DIR / path


class PredictionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Prediction(models.Model):
    """The result of one model version on one scan; at most one per (scan, model version)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=16, choices=PredictionStatus.choices, default=PredictionStatus.QUEUED, db_index=True
    )
    probability = models.FloatField(null=True, blank=True)
    label = models.BooleanField(null=True, blank=True)  # True = hemorrhage (probability >= threshold)
    threshold = models.FloatField(null=True, blank=True)  # the threshold used, copied from the model version
    slice_probabilities = models.JSONField(default=list, blank=True)  # in Slice.index order
    error_message = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True)  # seconds: load, inference, heatmap, total, queue_wait
    # How a thin-slice DICOM series was read (ml.slabs.SlabPlan.to_dict: slab_mm, spacing_mm, slices_per_slab,
    # slabs, ...); empty when the model read the slices one by one. With it, each slice's probability and heat map
    # are its slab's.
    slab_reading = models.JSONField(default=dict, blank=True)
    worker_host = models.CharField(max_length=255, blank=True)
    # The Celery task id of the run that marked it running: the same task delivered again means that run died
    # (its worker was lost, or it stopped on a database error), so the redelivery takes over at once.
    task_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    modified = models.DateTimeField(auto_now=True)
    # When it was last asked for: its creation, or the latest retry of a failure (with requested_by, who asked).
    requested = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            models.UniqueConstraint(fields=["scan", "model_version"], name="prediction_unique_scan_model_version")
        ]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.scan_id}: {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in (PredictionStatus.SUCCEEDED, PredictionStatus.FAILED)


def heatmap_upload_to(instance: HeatMap, filename: str) -> str:
    h = instance.prediction_id.hex
    return f"predictions/{h[:2]}/{h[2:4]}/{h}/{instance.index:04d}-heatmap.png"


class HeatMap(models.Model):
    """The heat-map overlay (RGB PNG: the windowed slice the model saw with the heat map over it) for one slice."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="heatmaps")
    slice = models.ForeignKey(Slice, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    probability = models.FloatField(null=True, blank=True)
    image = models.FileField(upload_to=heatmap_upload_to, storage=private_storage, max_length=255)

    class Meta:
        ordering = ["prediction", "index"]
        constraints = [models.UniqueConstraint(fields=["prediction", "index"], name="heatmap_unique_index")]

    def __str__(self) -> str:
        return f"heat map {self.index} of {self.prediction_id}"
