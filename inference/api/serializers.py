from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from inference.models import HeatMap, ModelVersion, Prediction


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "version", "sha256", "threshold", "metrics", "is_active", "created"]
        read_only_fields = fields


class ModelVersionBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "version", "sha256", "is_active"]
        read_only_fields = fields


class HeatMapSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = HeatMap
        fields = ["index", "probability", "url"]
        read_only_fields = fields

    def get_url(self, heatmap: HeatMap) -> str:
        return reverse(
            "api:prediction-heatmap",
            kwargs={"pk": heatmap.prediction_id, "index": heatmap.index},
            request=self.context.get("request"),
        )


class PredictionSerializer(serializers.ModelSerializer):
    """The result of one model version on one scan. ``label`` is true for hemorrhage (probability >= threshold);
    ``slice_probabilities`` and ``heatmaps`` are in slice order; ``error`` says why a failed prediction failed.
    ``slab_reading`` is set when a thin-slice DICOM series was read as slabs of the thickness the model was trained
    on (``slab_mm``, ``spacing_mm``, ``slices_per_slab``, ``averaged_per_slab``, ``thickness_mm``, ``overlap``,
    ``slabs``, ``slices``): each slice's probability and heat map are then its slab's. It is empty when the slices
    were read one by one."""

    case = serializers.UUIDField(source="scan.case_id", read_only=True)
    model_version = ModelVersionBriefSerializer(read_only=True)
    slice_probabilities = serializers.ListField(child=serializers.FloatField(), read_only=True)
    error = serializers.CharField(source="error_message", read_only=True)
    heatmaps = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = [
            "id",
            "url",
            "scan",
            "case",
            "status",
            "probability",
            "label",
            "threshold",
            "model_version",
            "slice_probabilities",
            "heatmaps",
            "slab_reading",
            "error",
            "timings",
            "created",
            "requested",
            "started",
            "finished",
        ]
        read_only_fields = fields

    @extend_schema_field(HeatMapSerializer(many=True))
    def get_heatmaps(self, prediction: Prediction) -> list[dict]:
        return HeatMapSerializer(prediction.heatmaps.all(), many=True, context=self.context).data

    def get_url(self, prediction: Prediction) -> str:
        return reverse("api:prediction-detail", kwargs={"pk": prediction.pk}, request=self.context.get("request"))


class RerunSerializer(serializers.Serializer):
    model_version = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Id or version string of a registered model version; empty or absent: the active one.",
    )

    def validate_model_version(self, value: str) -> ModelVersion | None:
        value = (value or "").strip()
        if not value:
            return None
        try:
            found = ModelVersion.objects.filter(pk=uuid.UUID(value)).first()
        except ValueError:
            found = ModelVersion.objects.filter(version=value).order_by("-created").first()
        if found is None:
            raise serializers.ValidationError("No model version with this id or version.", code="unknown_model")
        return found
