"""One JSON shape for every API error: ``{"detail": "<message>", "code": "<reason>", "errors": {field: [messages]}}``.

``detail`` is always a sentence a person can read; ``errors`` holds per-field messages (empty when the error is not
about input). Django's ValidationError (the services' IngestError included), PermissionDenied and Http404 are
translated the same way as DRF's own exceptions; anything unexpected becomes a logged 500 with a neutral message.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from hemoplatform.middleware import request_limit_refusal

logger = logging.getLogger(__name__)

NON_FIELD = "non_field_errors"


def _flatten(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [m for value in detail.values() for m in _flatten(value)]
    if isinstance(detail, list | tuple):
        return [m for value in detail for m in _flatten(value)]
    return [str(detail)]


def _field_errors(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    return {NON_FIELD: _flatten(detail)}


def _first_code(codes: Any) -> str:
    if isinstance(codes, dict):
        for value in codes.values():
            return _first_code(value)
        return "invalid"
    if isinstance(codes, list | tuple):
        return _first_code(codes[0]) if codes else "invalid"
    return str(codes or "invalid")


def _validation_message(errors: dict[str, list[str]]) -> str:
    for field, messages in errors.items():
        if messages:
            return messages[0] if field == NON_FIELD else f"{field}: {messages[0]}"
    return "Invalid input."


def _from_django_validation_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        detail: Any = {key: [m for e in errors for m in e.messages] for key, errors in exc.error_dict.items()}
        code = next((e.code for errors in exc.error_dict.values() for e in errors if e.code), "invalid")
    else:
        detail = list(exc.messages)
        code = getattr(exc, "code", None) or next((e.code for e in exc.error_list if e.code), "invalid")
    return exceptions.ValidationError(detail, code=code)


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]."""
    from inference.services import ModelUnavailable

    if isinstance(exc, DjangoValidationError):
        exc = _from_django_validation_error(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif refusal := request_limit_refusal(exc):
        exc = exceptions.APIException(refusal[0], code=refusal[1])
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, SuspiciousOperation):
        # Django answers these with 400 (too many fields, a malformed multipart body...).
        exc = exceptions.ParseError(str(exc) or "The request was refused as malformed.")
    elif isinstance(exc, ModelUnavailable):
        exc = exceptions.APIException(str(exc), code="model_unavailable")
        exc.status_code = status.HTTP_503_SERVICE_UNAVAILABLE

    if not isinstance(exc, exceptions.APIException):
        view = context.get("view")
        logger.exception("Unhandled API error in %s", view.__class__.__name__ if view else "?", exc_info=exc)
        set_rollback()
        return Response(
            {"detail": "Internal server error; it was logged.", "code": "server_error", "errors": {}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        body = {"detail": _validation_message(errors), "code": _first_code(exc.get_codes()), "errors": errors}
    else:
        detail = exc.detail
        if isinstance(detail, dict | list):
            errors = _field_errors(detail)
            body = {"detail": _validation_message(errors), "code": _first_code(exc.get_codes()), "errors": errors}
        else:
            body = {"detail": str(detail), "code": str(getattr(detail, "code", None) or exc.default_code), "errors": {}}
    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


@csrf_exempt  # it changes nothing; without this a POST to an unknown path got Django's HTML CSRF page
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/ answer in the API's error shape, not with the HTML 404 page (and without
    APPEND_SLASH's redirect, which would drop the body of a POST)."""
    from django.urls import Resolver404, resolve

    detail = "Not found."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            detail = f"Not found. API paths end with a slash: {request.path}/"
    return JsonResponse({"detail": detail, "code": "not_found", "errors": {}}, status=404)
