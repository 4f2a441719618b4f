from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from scans.models import Case, Scan, Slice, validate_patient_ref


def _url(name: str, request, **kwargs) -> str:
    return reverse(f"api:{name}", kwargs=kwargs, request=request)


# --- cases ------------------------------------------------------------------------------------------------------------


class CaseSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    scan_count = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    scans_url = serializers.SerializerMethodField()

    class Meta:
        model = Case
        fields = [
            "id",
            "url",
            "patient_ref",
            "title",
            "notes",
            "organization",
            "owner",
            "scan_count",
            "scans_url",
            "created",
            "modified",
        ]
        read_only_fields = fields

    def get_scan_count(self, case: Case) -> int:
        count = getattr(case, "scan_count", None)
        return count if count is not None else case.scans.count()

    def get_url(self, case: Case) -> str:
        return _url("case-detail", self.context.get("request"), pk=case.pk)

    def get_scans_url(self, case: Case) -> str:
        return _url("case-scans", self.context.get("request"), pk=case.pk)


class CaseCreateSerializer(serializers.Serializer):
    patient_ref = serializers.CharField(
        max_length=32,
        validators=[validate_patient_ref],
        help_text="A pseudonymous code (3-32 letters, digits, '.', '_', '-', with a digit). Never a name.",
    )
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    notes = serializers.CharField(max_length=20000, required=False, allow_blank=True, default="")


class CaseUpdateSerializer(serializers.Serializer):
    """Only the title and notes change; anything else sent is a 400 naming the field (an integrator sending
    ``patient_ref`` must not read a 200 as "changed")."""

    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    notes = serializers.CharField(max_length=20000, required=False, allow_blank=True)

    def validate(self, attrs):
        others = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if others:
            raise serializers.ValidationError({name: [_not_changeable(name)] for name in others}, code="unknown_field")
        return attrs


def _not_changeable(name: str) -> str:
    if name == "patient_ref":
        return "A case's patient reference cannot be changed: create a new case."
    if name in CaseSerializer.Meta.fields:
        return "This field is read-only."
    return "Unknown field: only title and notes can be changed."


# --- scans ------------------------------------------------------------------------------------------------------------

# What the API shows of ml.inputcheck's result (docs/API.md lists them).
INPUT_CHECK_KEYS = (
    "verdict",
    "message",
    "slices",
    "total",
    "unusual",
    "failed",
    "thick_slices",
    "max_slice_thickness_mm",
)


class PredictionSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    probability = serializers.FloatField(allow_null=True)
    label = serializers.BooleanField(allow_null=True)
    model_version = serializers.CharField(help_text="Name and version of the model.")
    url = serializers.CharField()


def prediction_summary(prediction, request) -> dict | None:
    if prediction is None:
        return None
    return {
        "id": prediction.pk,
        "status": prediction.status,
        "probability": prediction.probability,
        "label": prediction.label,
        "model_version": f"{prediction.model_version.name} {prediction.model_version.version}",
        "url": _url("prediction-detail", request, pk=prediction.pk),
    }


def latest_prediction(scan: Scan):
    """The newest prediction, by the active model first (as inference.selectors.prediction_latest_for_scan), from
    the prefetched predictions when the queryset has them."""
    predictions = list(scan.predictions.all())
    if not predictions:
        return None
    return sorted(predictions, key=lambda p: (p.model_version.is_active, p.created), reverse=True)[0]


class SliceSerializer(serializers.ModelSerializer):
    preview_url = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = Slice
        fields = [
            "index",
            "content_type",
            "rows",
            "columns",
            "pixel_spacing",
            "slice_thickness",
            "slice_position",
            "instance_number",
            "preview_url",
            "file_url",
        ]
        read_only_fields = fields

    def get_preview_url(self, slice_: Slice) -> str:
        return _url("scan-slice-preview", self.context.get("request"), pk=slice_.scan_id, index=slice_.index)

    def get_file_url(self, slice_: Slice) -> str:
        return _url("scan-slice-file", self.context.get("request"), pk=slice_.scan_id, index=slice_.index)


class ScanSerializer(serializers.ModelSerializer):
    """A scan and its prediction: the one just requested after an upload, else the latest."""

    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    skipped_files = serializers.SerializerMethodField(
        help_text="Files of an uploaded ZIP that are neither DICOM nor PNG/JPEG (a LICENSE, a README, ...) and were "
        "left out of the scan."
    )
    input_check = serializers.SerializerMethodField(
        help_text="Does the scan look like head CT in a brain window (checked at upload, before the model)? "
        "verdict: ok, or warn (the probability may be meaningless for it: see message); uploads that do not look "
        "like head CT at all are refused (415, code not_ct). slices: how many were checked (a long series: 64 evenly "
        "spaced of its total); failed: how many of them lack each property. Null for scans uploaded before the check "
        "existed."
    )
    prediction = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = [
            "id",
            "url",
            "case",
            "kind",
            "modality",
            "slice_count",
            "sha256",
            "status",
            "uploaded_by",
            "original_filenames",
            "skipped_files",
            "input_check",
            "created",
            "prediction",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_skipped_files(self, scan: Scan) -> list[str]:
        return list((scan.details or {}).get("skipped_files") or [])

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_input_check(self, scan: Scan) -> dict | None:
        check = (scan.details or {}).get("input_check")
        if not check:
            return None
        return {key: check.get(key) for key in INPUT_CHECK_KEYS}

    @extend_schema_field(PredictionSummarySerializer(allow_null=True))
    def get_prediction(self, scan: Scan) -> dict | None:
        prediction = self.context.get("prediction")
        if prediction is None or prediction.scan_id != scan.pk:
            prediction = latest_prediction(scan)
        return prediction_summary(prediction, self.context.get("request"))

    def get_url(self, scan: Scan) -> str:
        return _url("scan-detail", self.context.get("request"), pk=scan.pk)


class ScanDetailSerializer(ScanSerializer):
    slices = SliceSerializer(many=True, read_only=True)
    predictions = serializers.SerializerMethodField()

    class Meta(ScanSerializer.Meta):
        fields = [*ScanSerializer.Meta.fields, "details", "predictions", "slices"]
        read_only_fields = fields

    @extend_schema_field(PredictionSummarySerializer(many=True))
    def get_predictions(self, scan: Scan) -> list[dict]:
        request = self.context.get("request")
        return [prediction_summary(p, request) for p in scan.predictions.all()]


class ScanUploadSerializer(serializers.Serializer):
    """For the schema: the files are handed to the shared ingestion service as they are."""

    files = serializers.ListField(
        child=serializers.FileField(),
        help_text="One PNG or JPEG image, one or more DICOM files of one CT series, or a ZIP of a series. Repeat "
        "the `files` field for several files.",
    )
