"""Pages for predictions and models: result page (probability, per-slice chart, slice viewer with heat maps),
model card page with its training plots, and the prediction audit list.

Reads go through inference.selectors / inference.page_selectors (404 across organizations); writes through
inference.services. Each view names who may use it (accounts.decorators).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import auditor_required, member_required
from accounts.exports import audit_export_record, csv_download, export_query, invalid_filters_response
from accounts.page_selectors import organization_members
from accounts.permissions import user_can_write_record
from inference.forms import PredictionAuditFilterForm
from inference.models import ModelVersion, Prediction, PredictionStatus
from inference.page_selectors import prediction_list_for_audit, prediction_viewer_slices
from inference.selectors import model_version_list, prediction_get_visible
from inference.services import ModelUnavailable, prediction_record_view, prediction_request
from ml import slabs
from scans.selectors import scan_get_visible

PENDING = (PredictionStatus.QUEUED, PredictionStatus.RUNNING)
MODEL_ARTIFACTS = {"curves": "curves.png", "roc": "roc.png"}
PREDICTIONS_PER_PAGE = 50

# Geometry of the per-slice probability chart (SVG user units; the SVG scales to its container).
CHART_WIDTH, CHART_HEIGHT = 800, 240
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 44, 12, 12, 30


def slice_chart(probabilities: list[float | None], threshold: float | None) -> dict[str, Any] | None:
    """Bars, axis ticks and the threshold line of the per-slice chart, in SVG coordinates (rendered server-side)."""
    if not probabilities:
        return None
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    baseline = CHART_TOP + plot_h
    n = len(probabilities)
    step = plot_w / n
    bar_w = min(max(step * 0.8, 1.0), 48.0)
    bars = []
    label_every = max(1, n // 14)
    for i, p in enumerate(probabilities):
        value = float(p) if p is not None else 0.0
        height = value * plot_h
        x = CHART_LEFT + i * step + (step - bar_w) / 2
        bars.append(
            {
                "index": i,
                "number": i + 1,
                "probability": p,
                "x": round(x, 2),
                "y": round(baseline - height, 2),
                "width": round(bar_w, 2),
                "height": round(height, 2),
                "center": round(x + bar_w / 2, 2),
                "positive": threshold is not None and p is not None and p >= threshold,
                "show_label": i % label_every == 0 or i == n - 1,
            }
        )
    ticks = [
        {"value": v, "y": round(baseline - v * plot_h, 2), "text": f"{int(v * 100)} %"}
        for v in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "right": CHART_WIDTH - CHART_RIGHT,
        "top": CHART_TOP,
        "plot_height": plot_h,
        "baseline": baseline,
        "label_y": baseline + 18,
        "bars": bars,
        "ticks": ticks,
        "count": n,
        "threshold": threshold,
        "threshold_y": round(baseline - threshold * plot_h, 2) if threshold is not None else None,
        "threshold_label_y": round(baseline - threshold * plot_h - 4, 2) if threshold is not None else None,
    }


def _selected_slice(request: HttpRequest, prediction: Prediction, count: int) -> int:
    try:
        index = int(request.GET.get("slice", ""))
    except ValueError:
        probabilities = prediction.slice_probabilities or []
        # Open on the slice the model finds most suspicious.
        index = max(range(len(probabilities)), key=probabilities.__getitem__) if probabilities else 0
    return min(max(index, 0), max(count - 1, 0))


@require_GET
@member_required
def prediction_detail(request: HttpRequest, prediction_id: uuid.UUID) -> HttpResponse:
    prediction = prediction_get_visible(user=request.user, prediction_id=prediction_id)
    if prediction.is_finished:  # a queued or running one (the page reloads while pending) shows no result yet
        prediction_record_view(prediction=prediction, user=request.user, request=request)
    entries = prediction_viewer_slices(prediction=prediction)
    selected = _selected_slice(request, prediction, len(entries))
    viewer = [
        {
            "index": e["index"],
            "number": e["index"] + 1,
            "probability": e["probability"],
            "preview": reverse("scans:slice-preview", kwargs={"slice_id": e["slice"].pk}),
            "heatmap": reverse("inference:heatmap", kwargs={"prediction_id": prediction.pk, "index": e["index"]})
            if e["heatmap"] is not None
            else None,
        }
        for e in entries
    ]
    context = {
        "prediction": prediction,
        "scan": prediction.scan,
        "case": prediction.scan.case,
        "model_version": prediction.model_version,
        "chart": slice_chart(prediction.slice_probabilities or [], prediction.threshold),
        "slab_reading": slabs.describe(prediction.slab_reading or {}),
        "viewer": viewer,
        "selected": viewer[selected] if viewer else None,
        "has_heatmaps": any(v["heatmap"] for v in viewer),
        "pending": prediction.status in PENDING,
        "can_request": user_can_write_record(request.user, prediction.scan.case.organization_id),
    }
    return render(request, "inference/prediction_detail.html", context)


@never_cache
@require_GET
@member_required
def prediction_status(request: HttpRequest, prediction_id: uuid.UUID) -> JsonResponse:
    """Polled by the result page while the prediction is queued or running."""
    prediction = prediction_get_visible(user=request.user, prediction_id=prediction_id)
    return JsonResponse(
        {
            "state": prediction.status,
            "pending": prediction.status in PENDING,
            "status": prediction.status,
            "probability": prediction.probability,
            "label": prediction.label,
        }
    )


@require_POST
@member_required
def scan_predict(request: HttpRequest, scan_id: uuid.UUID) -> HttpResponse:
    """Ask for the active model's prediction of a scan (a failed one is retried; a finished one is shown)."""
    scan = scan_get_visible(user=request.user, scan_id=scan_id)
    if not user_can_write_record(request.user, scan.case.organization_id):
        raise PermissionDenied("Your role is read-only: you may not request predictions.")
    try:
        prediction = prediction_request(scan=scan, user=request.user, request=request)
    except ModelUnavailable as exc:
        messages.error(request, str(exc))
        return redirect("cases:detail", case_id=scan.case_id)
    messages.info(request, f"Prediction {prediction.get_status_display().lower()}.")
    return redirect("results:detail", prediction_id=prediction.pk)


# --- models -----------------------------------------------------------------------------------------------------------


def _metric_rows(metrics: dict) -> list[dict[str, Any]]:
    """Rows (split, dataset, level, metrics) from the model card's nested metrics: split -> dataset -> level."""
    rows = []
    order = {"validation": 0, "val": 0, "test": 1}
    for split, by_dataset in sorted((metrics or {}).items(), key=lambda item: order.get(item[0], 2)):
        if not isinstance(by_dataset, dict):
            continue
        for dataset, entry in by_dataset.items():
            if not isinstance(entry, dict):
                continue
            for level in ("scan", "slice"):
                values = entry.get(level)
                if isinstance(values, dict):
                    rows.append(
                        {
                            "split": split,
                            "dataset": dataset,
                            "level": level,
                            **{
                                key: values.get(key)
                                for key in ("n", "n_positive", "auc", "sensitivity", "specificity", "accuracy", "f1")
                            },
                        }
                    )
    return rows


def _split_sizes(splits: Any) -> list[dict[str, Any]]:
    sizes = []
    for dataset, parts in (splits or {}).items() if isinstance(splits, dict) else ():
        if isinstance(parts, dict):
            sizes.append(
                {
                    "dataset": dataset,
                    **{part: len(v) if isinstance(v, list | tuple) else v for part, v in parts.items()},
                }
            )
    return sizes


def _ensemble_members(card: dict) -> dict | None:
    """An ensemble card's combination rule and members (version, training seed, command, epochs, minutes)."""
    ens = card.get("ensemble")
    if not isinstance(ens, dict) or not isinstance(ens.get("members"), list):
        return None
    keys = ("version", "train_seed", "command", "epochs_run", "best_epoch", "train_minutes")
    members = [{k: m.get(k) for k in keys} for m in ens["members"] if isinstance(m, dict)]
    return {"combine": ens.get("combine", ""), "members": members}


def _model_context(model_version: ModelVersion) -> dict[str, Any]:
    card = model_version.card or {}
    metrics = model_version.metrics or card.get("metrics") or {}
    rows = _metric_rows(metrics)
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)} if not rows else {}
    training = card.get("training") if isinstance(card.get("training"), dict) else {}
    ensemble = _ensemble_members(card)
    ensemble_keys = ("epochs_run", "best_epoch") if ensemble else ()
    return {
        "model_version": model_version,
        "card": card,
        "metric_rows": rows,
        "flat_metrics": flat,
        "split_sizes": _split_sizes(card.get("splits")),
        "data": card.get("data") if isinstance(card.get("data"), dict) else {},
        # An ensemble's per-member epochs are in its members' table, not summed or listed among the facts.
        "training": {k: v for k, v in training.items() if k not in ("history", "members", *ensemble_keys)},
        "ensemble": ensemble,
        "artifacts": {key: (model_version.directory / name).is_file() for key, name in MODEL_ARTIFACTS.items()},
        "other_versions": model_version_list().exclude(pk=model_version.pk)[:10],
    }


@require_GET
@member_required
def model_active(request: HttpRequest) -> HttpResponse:
    model_version = model_version_list().filter(is_active=True).first()
    if model_version is None:
        return render(
            request, "inference/model_detail.html", {"model_version": None, "other_versions": model_version_list()[:10]}
        )
    return render(request, "inference/model_detail.html", _model_context(model_version))


@require_GET
@member_required
def model_detail(request: HttpRequest, model_id: uuid.UUID) -> HttpResponse:
    model_version = model_version_list().filter(pk=model_id).first()
    if model_version is None:
        raise Http404("No such model version.")
    return render(request, "inference/model_detail.html", _model_context(model_version))


@require_GET
@member_required
def model_artifact(request: HttpRequest, model_id: uuid.UUID, name: str) -> FileResponse:
    """The training curves or ROC plot stored beside a registered model's weights."""
    model_version = model_version_list().filter(pk=model_id).first()
    if model_version is None or name not in MODEL_ARTIFACTS:
        raise Http404("Not found.")
    path = Path(model_version.directory) / MODEL_ARTIFACTS[name]
    if not path.is_file():
        raise Http404("This model has no such plot.")
    response = FileResponse(open(path, "rb"), content_type="image/png")  # FileResponse closes the file
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- audit ------------------------------------------------------------------------------------------------------------


@require_GET
@auditor_required
def audit_predictions(request: HttpRequest) -> HttpResponse:
    form = PredictionAuditFilterForm(request.GET or None, members=organization_members(user=request.user))
    if form.is_bound and not form.is_valid():  # errors shown and no rows: never every prediction as if it matched
        predictions = Prediction.objects.none()
    else:
        predictions = _audited_predictions(request.user, form.cleaned_data if form.is_bound else {})
    page = Paginator(predictions, PREDICTIONS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "audit/predictions.html",
        {"form": form, "page": page, "export_query": export_query(request.GET)},
    )


PREDICTION_EXPORT_HEADER = [
    "prediction_id",
    "created",
    "requested",
    "finished",
    "patient_ref",
    "case_id",
    "scan_id",
    "scan_kind",
    "slices",
    "model_version",
    "status",
    "probability",
    "threshold",
    "label",
    "requested_by",
    "worker_host",
    "input_check",
    "error",
]


def _audited_predictions(user, filters: dict[str, Any]):
    """The audit list for the filter form's cleaned data (empty: no filter)."""
    return prediction_list_for_audit(
        user=user,
        date_from=filters.get("date_from"),
        date_to=filters.get("date_to"),
        status=filters.get("status", ""),
        label=filters.get("label", ""),
        requested_by=filters.get("user", ""),
        input_check=filters.get("input_check", ""),
    )


def _label_word(prediction: Prediction) -> str:
    if prediction.status != PredictionStatus.SUCCEEDED or prediction.label is None:
        return ""
    return "positive" if prediction.label else "negative"


@require_GET
@auditor_required
def audit_predictions_export(request: HttpRequest) -> HttpResponse:
    """Every prediction the audit page lists for these filters, as CSV (which must be valid: an export never
    widens silently). ``label`` is positive / negative for a succeeded prediction and empty otherwise."""
    form = PredictionAuditFilterForm(request.GET, members=organization_members(user=request.user))
    if not form.is_valid():
        return invalid_filters_response(form)
    filters = form.cleaned_data
    predictions = _audited_predictions(request.user, filters)
    audit_export_record(
        user=request.user, export="predictions", filters=filters, rows=predictions.count(), request=request
    )
    rows = (
        [
            p.pk,
            p.created,
            p.requested,
            p.finished,
            p.scan.case.patient_ref,
            p.scan.case_id,
            p.scan_id,
            p.scan.kind,
            p.scan.slice_count,
            p.model_version.version,
            p.status,
            p.probability,
            p.threshold,
            _label_word(p),
            p.requested_by.get_username() if p.requested_by else "system",
            p.worker_host,
            ((p.scan.details or {}).get("input_check") or {}).get("verdict", ""),
            p.error_message,
        ]
        for p in predictions.iterator(chunk_size=500)
    )
    return csv_download(name="predictions", header=PREDICTION_EXPORT_HEADER, rows=rows)
