"""File views: every clinical file leaves the server only here, after a permission check (404 across organizations).

Downloads of original files are audited; thumbnails and previews (shown in lists and viewers) are not, or the trail
would drown in rows.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from scans.models import ScanKind
from scans.selectors import scan_get_visible, slice_get_visible
from scans.services import slice_record_download


def _file_response(field, *, content_type: str, filename: str, as_attachment: bool) -> FileResponse:
    if not field:
        raise Http404("No file.")
    try:
        handle = field.open("rb")
    except FileNotFoundError as exc:
        raise Http404("File missing.") from exc
    response = FileResponse(handle, content_type=content_type, as_attachment=as_attachment, filename=filename)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@login_required
def slice_file(request: HttpRequest, slice_id: uuid.UUID) -> FileResponse:
    """The stored original (PNG/JPEG, or de-identified DICOM) as an attachment."""
    slice_ = slice_get_visible(user=request.user, slice_id=slice_id)
    extension = {"application/dicom": "dcm", "image/png": "png", "image/jpeg": "jpg"}.get(slice_.content_type, "bin")
    # Opened first: a missing file is a 404 and no download to audit.
    response = _file_response(
        slice_.file,
        content_type=slice_.content_type,
        as_attachment=True,
        filename=f"scan-{slice_.scan_id}-{slice_.index:04d}.{extension}",
    )
    slice_record_download(slice_=slice_, user=request.user, via="page", request=request)
    return response


@require_GET
@login_required
def slice_thumbnail(request: HttpRequest, slice_id: uuid.UUID) -> FileResponse:
    slice_ = slice_get_visible(user=request.user, slice_id=slice_id)
    return _file_response(
        slice_.thumbnail, content_type="image/png", as_attachment=False, filename=f"thumb-{slice_.index:04d}.png"
    )


@require_GET
@login_required
def slice_preview(request: HttpRequest, slice_id: uuid.UUID) -> FileResponse:
    """The full-size windowed PNG a browser can show (DICOM itself cannot be displayed)."""
    slice_ = slice_get_visible(user=request.user, slice_id=slice_id)
    return _file_response(
        slice_.preview, content_type="image/png", as_attachment=False, filename=f"slice-{slice_.index:04d}.png"
    )


@require_GET
@login_required
def scan_thumbnail(request: HttpRequest, scan_id: uuid.UUID) -> FileResponse:
    """The thumbnail of the scan's middle slice (a representative image for lists)."""
    scan = scan_get_visible(user=request.user, scan_id=scan_id)
    middle = scan.slices.filter(index=scan.slice_count // 2 if scan.kind == ScanKind.DICOM_SERIES else 0).first()
    if middle is None:
        raise Http404("No slices.")
    return _file_response(
        middle.thumbnail, content_type="image/png", as_attachment=False, filename=f"scan-{scan.pk}.png"
    )
