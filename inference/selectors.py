"""Reads for predictions and model versions, limited to what the user may see (see accounts.permissions)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from accounts.permissions import user_can_read
from inference.models import HeatMap, ModelVersion, Prediction
from scans.models import Scan


def prediction_list_visible(*, user: User) -> QuerySet[Prediction]:
    if not user_can_read(user):
        return Prediction.objects.none()
    return Prediction.objects.filter(scan__case__organization_id=user.organization_id).select_related(
        "scan__case", "model_version"
    )


def prediction_get_visible(*, user: User, prediction_id: uuid.UUID | str) -> Prediction:
    try:
        return prediction_list_visible(user=user).get(pk=prediction_id)
    except Exception as exc:  # missing, other organization, or not a UUID: all look the same
        raise Http404("Not found.") from exc


def heatmap_get_visible(*, user: User, prediction_id: uuid.UUID | str, index: int) -> HeatMap:
    try:
        return HeatMap.objects.get(
            prediction=prediction_get_visible(user=user, prediction_id=prediction_id), index=index
        )
    except HeatMap.DoesNotExist as exc:
        raise Http404("Not found.") from exc


def prediction_latest_for_scan(*, scan: Scan) -> Prediction | None:
    """The newest prediction of a scan (by the active model when it has one)."""
    return scan.predictions.select_related("model_version").order_by("-model_version__is_active", "-created").first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.all()
