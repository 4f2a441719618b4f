"""Reads for the case pages, built on scans.selectors (so they see only what the user may see)."""

from __future__ import annotations

from django.db.models import Count, OuterRef, Prefetch, Q, QuerySet, Subquery

from accounts.models import User
from inference.models import Prediction
from scans.models import Case, Scan
from scans.selectors import case_list_visible


def case_list_for_dashboard(*, user: User, search: str = "", status: str = "", label: str = "") -> QuerySet[Case]:
    """The user's visible cases with their scan count and newest prediction (status, probability, label).

    ``search`` matches the patient reference or title; ``status`` is a PredictionStatus value or "none" (no
    prediction yet); ``label`` is "positive" or "negative" (of the newest prediction).
    """
    latest = Prediction.objects.filter(scan__case=OuterRef("pk")).order_by("-created")
    cases = case_list_visible(user=user).annotate(
        scan_count=Count("scans", distinct=True),
        latest_prediction_id=Subquery(latest.values("pk")[:1]),
        latest_status=Subquery(latest.values("status")[:1]),
        latest_probability=Subquery(latest.values("probability")[:1]),
        latest_label=Subquery(latest.values("label")[:1]),
    )
    search = (search or "").strip()
    if search:
        cases = cases.filter(Q(patient_ref__icontains=search) | Q(title__icontains=search))
    if status == "none":
        cases = cases.filter(latest_status__isnull=True)
    elif status:
        cases = cases.filter(latest_status=status)
    if label == "positive":
        cases = cases.filter(latest_label=True)
    elif label == "negative":
        cases = cases.filter(latest_label=False)
    return cases.order_by("-created")


def case_scans_with_predictions(*, case: Case) -> QuerySet[Scan]:
    """A case's scans (newest first) with uploader and the prediction history (newest first).

    Not built on ``case_scans``: that one prefetches every slice row, which the case page and its status endpoint
    (polled every few seconds while a prediction runs) never use; a 1000-slice series cost 1000 rows per poll.
    """
    history = Prediction.objects.select_related("model_version", "requested_by").order_by("-created")
    return (
        case.scans.order_by("-created")
        .select_related("uploaded_by")
        .prefetch_related(Prefetch("predictions", queryset=history))
    )
