from __future__ import annotations

import re
import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import storages
from django.db import models
from django.utils.text import get_valid_filename

# Pseudonymous patient references look like codes ("HOSP-000123", "ct_ich-049"): letters, digits, . _ -, with at
# least one digit and no spaces, so that a typed name ("John Smith", "Smith") is refused.
PATIENT_REF_RE = re.compile(r"^(?=.*\d)[A-Za-z0-9][A-Za-z0-9._-]{2,31}$")


def validate_patient_ref(value: str) -> None:
    if not PATIENT_REF_RE.match(value or ""):
        raise ValidationError(
            "The patient reference must be a pseudonymous code of 3-32 letters, digits, '.', '_' or '-' that "
            "contains at least one digit (for example HOSP-000123). Never enter a patient's name.",
            code="invalid_patient_ref",
        )


def private_storage():
    """Clinical files live in the "private" storage: no public URL, served only by permission-checking views."""
    return storages["private"]


def clean_filename(name: str, *, default: str = "file") -> str:
    """A safe base name: no folders, no odd characters, bounded length."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    try:
        cleaned = get_valid_filename(base)
    except Exception:  # get_valid_filename raises on names such as "." or ".."
        cleaned = ""
    cleaned = cleaned.lstrip(".")[-80:]
    return cleaned or default


def _spread(scan_id: uuid.UUID) -> str:
    # Two levels from the UUID keep directories small with millions of scans.
    h = scan_id.hex
    return f"scans/{h[:2]}/{h[2:4]}/{h}"


def slice_upload_to(instance: Slice, filename: str) -> str:
    return f"{_spread(instance.scan_id)}/{instance.index:04d}-{clean_filename(filename)}"


def slice_derived_upload_to(instance: Slice, filename: str) -> str:
    return f"{_spread(instance.scan_id)}/derived/{instance.index:04d}-{clean_filename(filename)}"


class TimeStamped(models.Model):
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Case(TimeStamped):
    """One patient encounter. Identified only by a pseudonymous ``patient_ref``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="cases")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cases")
    patient_ref = models.CharField(max_length=32, validators=[validate_patient_ref], db_index=True)
    title = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["organization", "-created"])]

    def __str__(self) -> str:
        return self.title or f"Case {self.patient_ref}"


class ScanKind(models.TextChoices):
    IMAGE = "image", "Image (PNG/JPEG)"
    DICOM_SERIES = "dicom_series", "DICOM series"


class ScanStatus(models.TextChoices):
    # Ingestion validates everything before writing, so a stored scan is complete; the field leaves room for
    # ingestion moved into a task later (received -> ready / rejected).
    READY = "ready", "Ready"


class Scan(models.Model):
    """One uploaded study or series inside a case; its ``slices`` are stored in anatomical order."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="scans")
    kind = models.CharField(max_length=16, choices=ScanKind.choices)
    modality = models.CharField(max_length=16, blank=True)
    slice_count = models.PositiveIntegerField()
    # sha256 of the uploaded content: of the file for one file, else of the ordered per-slice sha256 digests.
    sha256 = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.READY)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    original_filenames = models.JSONField(default=list, blank=True)  # cleaned base names, as uploaded
    details = models.JSONField(default=dict, blank=True)  # e.g. series description, slice thickness
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.modality} ({self.slice_count} slices)"

    @property
    def organization_id(self):
        return self.case.organization_id

    @property
    def input_warning(self) -> str:
        """Why the scan looks unlike the head CT the model was trained on (``ml.inputcheck``, run at upload), or ""."""
        check = (self.details or {}).get("input_check") or {}
        return str(check.get("message") or "") if check.get("verdict") == "warn" else ""


class Slice(models.Model):
    """One image of a scan, in order (``index`` 0..n-1), with what preprocessing needs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="slices")
    index = models.PositiveIntegerField()
    # The stored image: the original PNG/JPEG, or the de-identified DICOM.
    file = models.FileField(upload_to=slice_upload_to, storage=private_storage, max_length=255)
    # Windowed PNGs (brain window for DICOM) for browsers: a small thumbnail and a full-size preview.
    thumbnail = models.FileField(upload_to=slice_derived_upload_to, storage=private_storage, max_length=255)
    preview = models.FileField(upload_to=slice_derived_upload_to, storage=private_storage, max_length=255)
    original_filename = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=64)
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    rescale_slope = models.FloatField(null=True, blank=True)
    rescale_intercept = models.FloatField(null=True, blank=True)
    pixel_spacing = models.JSONField(null=True, blank=True)  # [row mm, column mm]
    slice_thickness = models.FloatField(null=True, blank=True)
    image_position = models.JSONField(null=True, blank=True)  # ImagePositionPatient [x, y, z] mm
    slice_position = models.FloatField(null=True, blank=True)  # mm along the slice normal (the sort key)
    instance_number = models.IntegerField(null=True, blank=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["scan", "index"]
        constraints = [models.UniqueConstraint(fields=["scan", "index"], name="slice_unique_index_per_scan")]

    def __str__(self) -> str:
        return f"slice {self.index} of {self.scan_id}"
