"""Pieces every app's ``api/`` package shares: the role permission, pagination, scoped throttles, the error schema.

Who may do what is decided by ``accounts.permissions`` (the pages use the same helpers); querysets come from the
apps' selectors, which already limit them to the user's organization, so records of other organizations are 404.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import django_filters
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import Storage
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.renderers import BaseRenderer
from rest_framework.throttling import SimpleRateThrottle

from accounts.permissions import user_can_read, user_can_read_record, user_can_write, user_can_write_record

# Ids in API paths are UUIDs; anything else is not routed (a JSON 404 from the catch-all).
UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def record_organization_id(obj: Any) -> Any:
    """The organization a clinical record belongs to (Case, Scan, Prediction, HeatMap)."""
    for path in (
        "organization_id",
        "case.organization_id",
        "scan.case.organization_id",
        "prediction.scan.case.organization_id",
    ):
        value: Any = obj
        try:
            for part in path.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    return None


class OrganizationRecordPermission(BasePermission):
    """Deny by default. Reading: any member of an organization (clinician, auditor, admin). Writing (create, upload,
    rerun, change): clinicians and admins. On a single record the decision waits for the object, so a record of
    another organization is 404 (the selectors do not find it) and only a visible one can give 403."""

    message = "Your role does not allow this: auditors have read-only access, and users need an organization."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user_can_read(user):
            return False
        if request.method in SAFE_METHODS or getattr(view, "detail", False):
            return True
        return user_can_write(user)

    def has_object_permission(self, request, view, obj) -> bool:
        organization_id = record_organization_id(obj)
        if request.method in SAFE_METHODS:
            return user_can_read_record(request.user, organization_id)
        return user_can_write_record(request.user, organization_id)


class OrganizationMemberPermission(BasePermission):
    """Read-only data every member of an organization may see (model versions)."""

    message = "Your account is not a member of an organization."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS and user_can_read(request.user)


class ListFiltersOnlyMixin:
    """List filters (``?status=...``) apply to lists; a record named by its id is found whatever they say."""

    def filter_queryset(self, queryset):
        if getattr(self, "action", None) != "list":
            return queryset
        return super().filter_queryset(queryset)


class UTCDateTimeField(forms.DateTimeField):
    """An ISO date or date-time, converted to UTC: PostgreSQL refuses UTC offsets beyond +-15:59 that Python
    accepts, and a year-1 or year-9999 value can overflow on conversion; both are input errors (400), not 500s.

    ``through_the_day``: a date without a time, as an upper bound, means the end of that day (``created_before=
    2026-11-29`` keeps what was created on the 29th; midnight would drop the whole day)."""

    def __init__(self, *, through_the_day: bool = False, **kwargs):
        self.through_the_day = through_the_day
        super().__init__(**kwargs)

    def to_python(self, value):
        result = super().to_python(value)
        if result is None:
            return None
        try:
            if self.through_the_day and DATE_ONLY.match(str(value).strip()):
                result += datetime.timedelta(days=1) - datetime.timedelta(microseconds=1)
            return result.astimezone(datetime.UTC)
        except (OverflowError, ValueError) as exc:
            raise ValidationError("Enter a date and time between the years 1 and 9999.", code="invalid") from exc


DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class UTCDateTimeFilter(django_filters.DateTimeFilter):
    field_class = UTCDateTimeField

    def __init__(self, *args, **kwargs):
        if kwargs.get("lookup_expr") == "lte":  # an upper bound: a date alone means through that day
            kwargs.setdefault("through_the_day", True)
        super().__init__(*args, **kwargs)


class StrictBooleanField(forms.Field):
    """true/false, 1/0, yes/no in any case; anything else is a 400 (django-filter's BooleanFilter ignored "0", "no"
    and "maybe" and returned the unfiltered list: ``label=0`` listed the positives)."""

    TRUE, FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise ValidationError("Enter true or false.", code="invalid")


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StandardPagination(PageNumberPagination):
    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100


class SettingsScopedRateThrottle(SimpleRateThrottle):
    """A scoped throttle whose rate is read from ``settings.HEMO_API_THROTTLE_RATES`` on every request, so that
    deployments set it by environment and tests change it with the ``settings`` fixture. Keyed by user when
    authenticated, else by client address. State lives in Django's default cache."""

    scope = ""

    def get_rate(self) -> str | None:
        return settings.HEMO_API_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str:
        if request.user and request.user.is_authenticated:
            ident = str(request.user.pk)
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TokenIssueThrottle(SettingsScopedRateThrottle):
    scope = "token"

    def get_cache_key(self, request, view) -> str:
        # Password guessing is limited per client address, whoever the attempt claims to be.
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class UploadThrottle(SettingsScopedRateThrottle):
    scope = "upload"


class PNGRenderer(BaseRenderer):
    """Lets clients ask for ``Accept: image/png`` on file endpoints (the files themselves bypass rendering)."""

    media_type = "image/png"
    format = "png"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, bytes):
            return data
        # An error on a file endpoint: still JSON, and labelled so.
        import json

        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data, default=str).encode()


class JPEGRenderer(PNGRenderer):
    media_type = "image/jpeg"
    format = "jpg"


class DICOMRenderer(PNGRenderer):
    media_type = "application/dicom"
    format = "dcm"


def private_file_response(
    field, *, filename: str, content_type: str = "image/png", as_attachment: bool = False
) -> FileResponse:
    """Stream a file of the private storage (after the caller checked permission); 404 when it is missing."""
    if not field:
        raise Http404("No file.")
    storage: Storage = field.storage
    try:
        handle = storage.open(field.name, "rb")
    except FileNotFoundError as exc:
        raise Http404("File missing.") from exc
    response = FileResponse(handle, content_type=content_type, as_attachment=as_attachment, filename=filename)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


# --- the schema of errors -------------------------------------------------------------------------------------------

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(help_text="A human-readable message."),
        "code": serializers.CharField(help_text="A machine-readable reason, e.g. not_found, invalid, corrupt_image."),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="Messages per input field (``non_field_errors`` for the request as a whole); may be empty.",
        ),
    },
)

_ERROR_TEXT = {
    400: "Invalid input; `errors` names the fields.",
    401: "No or invalid credentials.",
    403: "Authenticated, but the role does not allow this.",
    404: "Not found, or not visible to this user (records of other organizations are never shown).",
    406: "The Accept header asks for a type this answer does not come in.",
    411: "A chunked upload without Content-Length: send the length.",
    413: "The upload (or the request's data) is too large.",
    415: "Unsupported media type.",
    429: "Too many requests; see Retry-After.",
    503: "No model is active.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description=_ERROR_TEXT.get(code, "Error.")) for code in codes}
