"""Reads for the result, model and prediction-audit pages, built on inference.selectors."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from accounts.models import User
from accounts.permissions import user_can_audit
from inference.models import HeatMap, Prediction
from inference.selectors import prediction_list_visible
from scans.models import Slice


def prediction_list_for_audit(
    *,
    user: User,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    status: str = "",
    label: str = "",
    requested_by: str = "",
    input_check: str = "",
) -> QuerySet[Prediction]:
    """Every prediction of the auditor's organization, newest first, filtered; empty for users who may not audit.

    Dates are inclusive days (UTC) of the request; ``label`` is "positive" or "negative"; ``requested_by`` a user id;
    ``input_check`` "warn" keeps predictions of scans the input check flagged as unusual (``ml.inputcheck``).
    """
    if not user_can_audit(user):
        return Prediction.objects.none()
    predictions = prediction_list_visible(user=user).select_related("scan__case", "model_version", "requested_by")
    if date_from:
        predictions = predictions.filter(created__date__gte=date_from)
    if date_to:
        predictions = predictions.filter(created__date__lte=date_to)
    if status:
        predictions = predictions.filter(status=status)
    if label == "positive":
        predictions = predictions.filter(label=True)
    elif label == "negative":
        predictions = predictions.filter(label=False)
    if requested_by:
        predictions = predictions.filter(requested_by_id=requested_by)
    if input_check:
        predictions = predictions.filter(scan__details__input_check__verdict=input_check)
    return predictions.order_by("-created")


def prediction_viewer_slices(*, prediction: Prediction) -> list[dict]:
    """One entry per slice of the prediction's scan, in order: the slice, its probability and heat map (if any)."""
    heatmaps = {h.index: h for h in HeatMap.objects.filter(prediction=prediction).only("id", "index", "probability")}
    probabilities = prediction.slice_probabilities or []
    entries = []
    for slice_ in Slice.objects.filter(scan_id=prediction.scan_id).order_by("index").only("id", "index", "scan_id"):
        i = slice_.index
        entries.append(
            {
                "slice": slice_,
                "index": i,
                "probability": probabilities[i] if i < len(probabilities) else None,
                "heatmap": heatmaps.get(i),
            }
        )
    return entries
