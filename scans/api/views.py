"""Cases and scans. Querysets come from scans.selectors (the user's organization only); writes go through
scans.services / inference.services, the same functions the pages call."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Prefetch
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches

from hemoplatform.api_support import (
    UUID_PATTERN,
    DICOMRenderer,
    JPEGRenderer,
    ListFiltersOnlyMixin,
    OrganizationRecordPermission,
    PNGRenderer,
    UploadThrottle,
    error_responses,
    private_file_response,
)
from inference.models import Prediction
from scans.api.filters import CaseFilter, ScanFilter
from scans.api.serializers import (
    CaseCreateSerializer,
    CaseSerializer,
    CaseUpdateSerializer,
    ScanDetailSerializer,
    ScanSerializer,
    ScanUploadSerializer,
)
from scans.models import Case, Scan
from scans.selectors import case_get_visible, case_list_visible, scan_list_visible
from scans.services import (
    IngestError,
    case_create,
    case_record_view,
    case_update,
    slice_record_download,
    upload_error_status,
)

FILE_TYPES = {"image/png", "image/jpeg", "application/dicom"}  # how slices are stored


def _accepts(request, media_type: str) -> bool:
    """Whether the request's Accept header admits ``media_type`` (``*/*``, ``image/*`` or the type itself)."""
    listed = [entry.split(";")[0].strip() for entry in request.META.get("HTTP_ACCEPT", "*/*").split(",")]
    return any(media_type_matches(media_type, entry) for entry in listed if entry)


_PREDICTIONS = Prefetch("predictions", queryset=Prediction.objects.select_related("model_version"))


def scans_with_predictions(queryset):
    return queryset.select_related("uploaded_by").prefetch_related(_PREDICTIONS)


@extend_schema_view(
    list=extend_schema(
        summary="Cases of your organization",
        responses={200: CaseSerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    retrieve=extend_schema(summary="One case", responses={200: CaseSerializer, **error_responses(401, 403, 404)}),
)
class CaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [OrganizationRecordPermission]
    lookup_value_regex = UUID_PATTERN
    serializer_class = CaseSerializer
    filterset_class = CaseFilter
    filter_backends = [*viewsets.GenericViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["created", "modified", "patient_ref"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    queryset = Case.objects.none()  # for the schema; get_queryset decides

    def get_queryset(self):
        return case_list_visible(user=self.request.user).annotate(scan_count=Count("scans")).order_by("-created")

    def get_throttles(self):
        if self.action == "scans" and self.request.method == "POST":
            return [UploadThrottle()]
        return super().get_throttles()

    def _case(self) -> Case:
        # The case named in the URL, without the list filters: 404 unless visible, then the role check (403).
        case = case_get_visible(user=self.request.user, case_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, case)
        return case

    @extend_schema(
        summary="Create a case",
        request=CaseCreateSerializer,
        responses={201: CaseSerializer, **error_responses(400, 401, 403, 413)},
    )
    def create(self, request):
        serializer = CaseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        case = case_create(user=request.user, request=request, **serializer.validated_data)
        return Response(
            CaseSerializer(case, context=self.get_serializer_context()).data, status=status.HTTP_201_CREATED
        )

    def retrieve(self, request, pk=None):
        case = self._case()
        with transaction.atomic():
            case_record_view(case=case, user=request.user, request=request)
        case.scan_count = case.scans.count()
        return Response(self.get_serializer(case).data)

    @extend_schema(
        summary="Change a case's title or notes",
        request=CaseUpdateSerializer,
        responses={200: CaseSerializer, **error_responses(400, 401, 403, 404, 413)},
    )
    def partial_update(self, request, pk=None):
        case = self._case()
        serializer = CaseUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        case = case_update(case=case, user=request.user, request=request, **serializer.validated_data)
        return Response(self.get_serializer(case).data)

    @extend_schema(
        methods=["GET"],
        summary="Scans of a case",
        filters=False,
        responses={200: ScanSerializer(many=True), **error_responses(401, 403, 404)},
    )
    @extend_schema(
        methods=["POST"],
        summary="Upload a scan to a case and request its prediction",
        description="Multipart with one or more `files`: one PNG or JPEG, DICOM files of one CT series, or a ZIP of "
        "a series. Validated by the same service as the upload page; a refused upload stores nothing. "
        "The answer includes `prediction` (`queued`); poll its `url` until `succeeded` or `failed`.",
        request={"multipart/form-data": ScanUploadSerializer},
        filters=False,
        responses={201: ScanSerializer, **error_responses(400, 401, 403, 404, 411, 413, 415, 429, 503)},
    )
    @action(
        detail=True,
        methods=["get", "post"],
        url_path="scans",
        url_name="scans",
        parser_classes=[MultiPartParser, FormParser],
    )
    def scans(self, request, pk=None):
        case = self._case()
        if request.method == "GET":
            queryset = scans_with_predictions(case.scans.order_by("-created"))
            page = self.paginate_queryset(queryset)
            serializer = ScanSerializer(page, many=True, context=self.get_serializer_context())
            return self.get_paginated_response(serializer.data)
        return self._upload(request, case)

    def _upload(self, request, case: Case) -> Response:
        from inference.services import scan_submit

        files = request.FILES.getlist("files")
        try:
            scan, prediction = scan_submit(case=case, user=request.user, files=files, request=request)
        except IngestError as exc:
            refused = exceptions.ValidationError({"files": list(exc.messages)}, code=exc.code or "invalid")
            refused.status_code = upload_error_status(exc)  # as on the upload page: 413 too big, 415 unsupported
            raise refused from exc
        scan = scans_with_predictions(Scan.objects.filter(pk=scan.pk)).get()
        context = {**self.get_serializer_context(), "prediction": prediction}
        return Response(ScanSerializer(scan, context=context).data, status=status.HTTP_201_CREATED)


_INDEX = OpenApiParameter("index", int, OpenApiParameter.PATH, description="Slice index, 0-based, in slice order.")


@extend_schema_view(
    list=extend_schema(
        summary="Scans of your organization",
        responses={200: ScanSerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    retrieve=extend_schema(
        summary="One scan with its slices and predictions",
        responses={200: ScanDetailSerializer, **error_responses(401, 403, 404)},
    ),
)
class ScanViewSet(ListFiltersOnlyMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [OrganizationRecordPermission]
    lookup_value_regex = UUID_PATTERN
    serializer_class = ScanSerializer
    filterset_class = ScanFilter
    filter_backends = [*viewsets.GenericViewSet.filter_backends, OrderingFilter]
    ordering_fields = ["created", "slice_count"]
    queryset = Scan.objects.none()

    def get_queryset(self):
        queryset = scans_with_predictions(scan_list_visible(user=self.request.user))
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("slices")
        return queryset

    def get_serializer_class(self):
        return ScanDetailSerializer if self.action == "retrieve" else ScanSerializer

    def _slice(self, index: str):
        scan = self.get_object()
        slice_ = scan.slices.filter(index=int(index)).first()
        if slice_ is None:
            raise Http404
        return scan, slice_

    @extend_schema(
        summary="Full-size windowed PNG of one slice",
        parameters=[_INDEX],
        filters=False,
        responses={
            (200, "image/png"): OpenApiResponse(bytes, description="PNG image."),
            **error_responses(401, 403, 404),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"slices/(?P<index>[0-9]{1,6})/preview",
        url_name="slice-preview",
        renderer_classes=[JSONRenderer, PNGRenderer],
    )
    def slice_preview(self, request, pk=None, index=None):
        scan, slice_ = self._slice(index)
        return private_file_response(slice_.preview, filename=f"slice-{slice_.index:04d}.png")

    @extend_schema(
        summary="The stored original of one slice (PNG, JPEG or de-identified DICOM); audited",
        parameters=[_INDEX],
        filters=False,
        responses={
            **{
                (200, media_type): OpenApiResponse(bytes, description="The file.")
                for media_type in ("image/png", "image/jpeg", "application/dicom")
            },
            **error_responses(401, 403, 404, 406),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"slices/(?P<index>[0-9]{1,6})/file",
        url_name="slice-file",
        renderer_classes=[JSONRenderer, PNGRenderer, JPEGRenderer, DICOMRenderer],
    )
    def slice_file(self, request, pk=None, index=None):
        scan, slice_ = self._slice(index)
        # The file is sent as stored, never converted: refused only when the Accept header asks for file types and
        # none of them is the stored one (DRF picks the first listed renderer, not the one that fits the file).
        if request.accepted_renderer.media_type in FILE_TYPES and not _accepts(request, slice_.content_type):
            raise exceptions.NotAcceptable(f"This slice is stored as {slice_.content_type}; ask for that, or */*.")
        extension = {"application/dicom": "dcm", "image/png": "png", "image/jpeg": "jpg"}.get(
            slice_.content_type, "bin"
        )
        # Opened first: a missing file is a 404 and no download to audit.
        response = private_file_response(
            slice_.file,
            content_type=slice_.content_type,
            as_attachment=True,
            filename=f"scan-{scan.pk}-{slice_.index:04d}.{extension}",
        )
        slice_record_download(slice_=slice_, user=request.user, via="api", request=request)
        return response
