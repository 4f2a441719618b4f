"""Predictions (read, rerun, heat maps) and model versions. Querysets from inference.selectors (the user's
organization only); writes through inference.services, as the pages."""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from hemoplatform.api_support import (
    UUID_PATTERN,
    ListFiltersOnlyMixin,
    OrganizationMemberPermission,
    OrganizationRecordPermission,
    PNGRenderer,
    error_responses,
    private_file_response,
)
from inference.api.filters import PredictionFilter
from inference.api.serializers import ModelVersionSerializer, PredictionSerializer, RerunSerializer
from inference.models import HeatMap, ModelVersion, Prediction
from inference.selectors import model_version_list, prediction_list_visible
from inference.services import model_version_get_active, prediction_get_or_request, prediction_record_view


@extend_schema_view(
    list=extend_schema(
        summary="Predictions of your organization",
        responses={200: PredictionSerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    retrieve=extend_schema(
        summary="One prediction: status, probability, label, per-slice probabilities, heat maps",
        responses={200: PredictionSerializer, **error_responses(401, 403, 404)},
    ),
)
class PredictionViewSet(ListFiltersOnlyMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [OrganizationRecordPermission]
    lookup_value_regex = UUID_PATTERN
    serializer_class = PredictionSerializer
    filterset_class = PredictionFilter
    filter_backends = [*viewsets.GenericViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["created", "finished", "probability"]
    queryset = Prediction.objects.none()

    def get_queryset(self):
        return prediction_list_visible(user=self.request.user).prefetch_related(
            Prefetch("heatmaps", queryset=HeatMap.objects.order_by("index"))
        )

    def retrieve(self, request, *args, **kwargs):
        prediction = self.get_object()
        if prediction.is_finished:
            prediction_record_view(prediction=prediction, user=request.user, request=request)
        return Response(self.get_serializer(prediction).data)

    @extend_schema(
        summary="Run a model version on the prediction's scan",
        description="Predictions are unique per (scan, model version): asking for a version the scan already has "
        "returns that prediction (200), retrying it when it failed; another version creates a new "
        "prediction (201). Without `model_version` the active model is used.",
        request=RerunSerializer,
        responses={200: PredictionSerializer, 201: PredictionSerializer, **error_responses(400, 401, 403, 404, 503)},
    )
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk=None):
        prediction = self.get_object()
        serializer = RerunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        model_version = serializer.validated_data.get("model_version") or model_version_get_active()
        result, created = prediction_get_or_request(
            scan=prediction.scan, model_version=model_version, user=request.user, request=request
        )
        result = self.get_queryset().get(pk=result.pk)
        return Response(
            self.get_serializer(result).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        summary="Heat-map overlay PNG of one slice",
        parameters=[OpenApiParameter("index", int, OpenApiParameter.PATH, description="Slice index, 0-based.")],
        responses={
            (200, "image/png"): OpenApiResponse(bytes, description="PNG image."),
            **error_responses(401, 403, 404),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"heatmaps/(?P<index>[0-9]{1,6})",
        url_name="heatmap",
        renderer_classes=[JSONRenderer, PNGRenderer],
    )
    def heatmap(self, request, pk=None, index=None):
        prediction = self.get_object()
        heatmap = prediction.heatmaps.filter(index=int(index)).first()
        if heatmap is None:
            raise Http404
        return private_file_response(heatmap.image, filename=f"heatmap-{heatmap.index:04d}.png")


@extend_schema_view(
    list=extend_schema(
        summary="Registered model versions (the active one is used for new predictions)",
        responses={200: ModelVersionSerializer(many=True), **error_responses(401, 403, 404)},
    ),
    retrieve=extend_schema(
        summary="One model version with its metrics",
        responses={200: ModelVersionSerializer, **error_responses(401, 403, 404)},
    ),
)
class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [OrganizationMemberPermission]
    lookup_value_regex = UUID_PATTERN
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.none()

    def get_queryset(self):
        return model_version_list().order_by("-is_active", "-created")
