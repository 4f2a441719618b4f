from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from inference.selectors import heatmap_get_visible


@require_GET
@login_required
def heatmap_image(request: HttpRequest, prediction_id: uuid.UUID, index: int) -> FileResponse:
    """The heat-map overlay PNG of one slice of a prediction (404 across organizations)."""
    heatmap = heatmap_get_visible(user=request.user, prediction_id=prediction_id, index=index)
    try:
        handle = heatmap.image.open("rb")
    except FileNotFoundError as exc:
        raise Http404("File missing.") from exc
    response = FileResponse(handle, content_type="image/png", filename=f"heatmap-{index:04d}.png")
    response["Cache-Control"] = "private, no-store"
    return response
