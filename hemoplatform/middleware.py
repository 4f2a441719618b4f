"""Two guards around every request: private responses are never kept by a browser or proxy, and an upload over the
limit is refused before it is read.

RequestSizeLimitMiddleware: refuse a request body over the upload limit from its Content-Length, before Django reads
or spools any of it.

scans.services applies HEMO_MAX_UPLOAD_MB to what was uploaded, but by then Django has already written the whole body
to a temporary file: a client declaring 50 GB would fill the disk first. This middleware answers 413 at once when
the declared body exceeds the limit plus a margin for the multipart envelope and form fields, so bodies just over the
limit still reach the service and get its exact message. The declared length is safe to trust under WSGI, which is
how the platform is served (gunicorn hemoplatform.wsgi, in scripts/up.sh and the Dockerfile): Django's WSGI request
reads at most CONTENT_LENGTH bytes of the body (a LimitedStream), and none at all when the header is missing, as in a
chunked request, so no body larger than the one declared here is ever read or spooled. Under ASGI Django spools the
whole body before any middleware runs; serving hemoplatform.asgi would need a body limit in front of it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.cache import add_never_cache_headers

from scans.services import MB, too_big_message

ENVELOPE_MARGIN = 1 * MB  # multipart boundaries, headers and ordinary form fields


def wants_json(request: HttpRequest) -> bool:
    """The page's own scripts (upload, status polling) ask for JSON; a plain form post gets a page."""
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or "application/json" in request.headers.get(
        "Accept", ""
    )


def declared_limit() -> int:
    return settings.HEMO_MAX_UPLOAD_MB * MB + ENVELOPE_MARGIN


class RequestSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > declared_limit():
            return self.refuse(request, declared)
        if (
            not declared
            and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
            and request.META.get("CONTENT_TYPE", "").startswith("multipart/")
        ):
            # Under WSGI Django reads no body without a Content-Length: an upload would arrive empty and be told
            # "no file was uploaded". Say what is wrong instead.
            return length_required_response(request)
        return self.get_response(request)

    @staticmethod
    def refuse(request: HttpRequest, declared: int) -> HttpResponse:
        message = too_big_message(declared, settings.HEMO_MAX_UPLOAD_MB * MB)  # the service's own wording
        # Nothing of the body has been read: no view ran and nothing reached the storage.
        return too_large_response(request, message, code="too_large")


def too_large_response(request: HttpRequest, message: str, *, code: str) -> HttpResponse:
    """413 in the form the caller reads: the API's error JSON, the page script's ``error``, or a page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message, "code": code, "errors": {}}, status=413)
    if wants_json(request):  # the case page's upload script shows `error` beside the form
        return JsonResponse({"error": message}, status=413)
    # The upload URL takes POSTs only: the way back is the case page that holds the form.
    back = request.path.removesuffix("upload/") if request.path.endswith("/upload/") else request.path
    return render(request, "413.html", {"message": message, "back": back}, status=413)


def length_required_response(request: HttpRequest) -> HttpResponse:
    message = (
        "Send the request with a Content-Length header: a chunked request body (Transfer-Encoding: chunked) is not "
        "read. Most HTTP clients set the length when given the file's bytes or a file object instead of a stream."
    )
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message, "code": "length_required", "errors": {}}, status=411)
    return HttpResponse(message, status=411, content_type="text/plain; charset=utf-8")


def request_limit_refusal(exc: Exception | None) -> tuple[str, str] | None:
    """(message, code) for Django's own limits on a request (too many files, a body over its limit), which Django
    reports as a 400 naming its settings; None for other errors."""
    if isinstance(exc, TooManyFilesSent):
        return (
            f"The upload has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files; a series may have at most "
            f"{settings.HEMO_MAX_SLICES} slices.",
            "too_many_slices",
        )
    if isinstance(exc, RequestDataTooBig):
        return (
            f"The request's form or JSON data is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // MB} MB (files are "
            "counted apart).",
            "too_large",
        )
    return None


class PrivateResponsesNotStoredMiddleware:
    """Every response to a signed-in user, and every API response, gets ``Cache-Control: no-store, private`` (unless
    the view set its own): a result page must not come back from the browser's cache through the Back button after
    the clinician signed out of a shared workstation, nor be kept by a proxy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if not response.has_header("Cache-Control") and (
            request.path.startswith("/api/") or (user is not None and user.is_authenticated)
        ):
            add_never_cache_headers(response)
        return response
