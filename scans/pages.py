"""Pages for cases: dashboard, create/edit, case page with upload and prediction history.

Thin views: reads go through scans.selectors / scans.page_selectors (404 across organizations), writes through
scans.services and inference.services. Each view names who may use it (accounts.decorators).
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.decorators import member_required, writer_required
from accounts.permissions import user_can_write_record
from hemoplatform.middleware import wants_json
from inference.models import PredictionStatus
from inference.services import ModelUnavailable, scan_submit
from scans.forms import CaseCreateForm, CaseEditForm, DashboardFilterForm, UploadForm
from scans.models import Case
from scans.page_selectors import case_list_for_dashboard, case_scans_with_predictions
from scans.selectors import case_get_visible
from scans.services import IngestError, case_create, case_record_view, case_update, upload_error_status

CASES_PER_PAGE = 20
PENDING = (PredictionStatus.QUEUED, PredictionStatus.RUNNING)


@require_GET
@member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    form = DashboardFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    cases = case_list_for_dashboard(
        user=request.user,
        search=filters.get("q", ""),
        status=filters.get("status", ""),
        label=filters.get("label", ""),
    )
    page = Paginator(cases, CASES_PER_PAGE).get_page(request.GET.get("page"))
    # The page polls itself (asking for JSON) while a listed case's latest prediction is queued or running.
    poll_state = ",".join(f"{c.pk}:{c.latest_prediction_id}:{c.latest_status}" for c in page.object_list)
    pending = any(c.latest_status in PENDING for c in page.object_list)
    if wants_json(request):
        return JsonResponse({"state": poll_state, "pending": pending})
    context = {
        "form": form,
        "page": page,
        "filtered": any(filters.values()),
        "pending": pending,
        "poll_state": poll_state,
    }
    return render(request, "scans/dashboard.html", context)


@require_http_methods(["GET", "POST"])
@writer_required
def case_new(request: HttpRequest) -> HttpResponse:
    form = CaseCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            case = case_create(user=request.user, request=request, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Case {case.patient_ref} created. Upload a CT scan to analyse it.")
            return redirect("cases:detail", case_id=case.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "scans/case_form.html", {"form": form, "creating": True}, status=status)


@require_http_methods(["GET", "POST"])
@member_required
def case_edit(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    case = case_get_visible(user=request.user, case_id=case_id)
    if not user_can_write_record(request.user, case.organization_id):
        raise PermissionDenied("Your role is read-only: you may not change cases.")
    form = CaseEditForm(request.POST or None, instance=case)
    if request.method == "POST" and form.is_valid():
        case_update(
            case=case,
            user=request.user,
            request=request,
            title=form.cleaned_data["title"],
            notes=form.cleaned_data["notes"],
        )
        messages.success(request, "Case updated.")
        return redirect("cases:detail", case_id=case.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "scans/case_form.html", {"form": form, "case": case, "creating": False}, status=status)


def _case_page(request: HttpRequest, case: Case, *, upload_error: str = "", status: int = 200) -> HttpResponse:
    scans = list(case_scans_with_predictions(case=case))
    pending = [p for scan in scans for p in scan.predictions.all() if p.status in PENDING]
    context = {
        "case": case,
        "scans": scans,
        "upload_form": UploadForm(),
        "upload_error": upload_error,
        "can_upload": user_can_write_record(request.user, case.organization_id),
        "pending": bool(pending),
        "poll_state": _case_poll_state(scans),
    }
    return render(request, "scans/case_detail.html", context, status=status)


def _case_poll_state(scans) -> str:
    return ",".join(f"{p.pk}:{p.status}" for scan in scans for p in scan.predictions.all())


@require_GET
@member_required
def case_detail(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    case = case_get_visible(user=request.user, case_id=case_id)
    case_record_view(case=case, user=request.user, request=request)
    return _case_page(request, case)


@never_cache
@require_GET
@member_required
def case_status(request: HttpRequest, case_id: uuid.UUID) -> JsonResponse:
    """Polled by the case page while predictions are queued or running."""
    case = case_get_visible(user=request.user, case_id=case_id)
    scans = list(case_scans_with_predictions(case=case))
    predictions = [p for scan in scans for p in scan.predictions.all()]
    return JsonResponse(
        {
            "state": _case_poll_state(scans),
            "pending": any(p.status in PENDING for p in predictions),
            "predictions": [
                {
                    "id": str(p.pk),
                    "scan": str(p.scan_id),
                    "status": p.status,
                    "probability": p.probability,
                    "label": p.label,
                }
                for p in predictions
            ],
        }
    )


@require_POST
@member_required
def case_upload(request: HttpRequest, case_id: uuid.UUID) -> HttpResponse:
    """Store the upload as one scan and queue its prediction; a refused upload stores nothing and answers 4xx."""
    case = case_get_visible(user=request.user, case_id=case_id)
    if not user_can_write_record(request.user, case.organization_id):
        raise PermissionDenied("Your role is read-only: you may not upload scans.")
    files = request.FILES.getlist("files")
    error, status = None, 200
    try:
        scan, prediction = scan_submit(case=case, user=request.user, files=files, request=request)
    except IngestError as exc:
        error, status = exc.message, upload_error_status(exc)
    except ModelUnavailable as exc:
        error, status = str(exc), 503
    if error is not None:
        if wants_json(request):
            return JsonResponse({"error": error}, status=status)
        return _case_page(request, case, upload_error=error, status=status)
    result_url = reverse("results:detail", kwargs={"prediction_id": prediction.pk})
    message = f"Uploaded {scan.get_kind_display().lower()} with {scan.slice_count} slice(s); analysis queued."
    skipped = scan.details.get("skipped_files") or []
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        message += f" Skipped {len(skipped)} file(s) of the ZIP that are not DICOM or PNG/JPEG images: {shown}."
    messages.success(request, message)
    if scan.input_warning:
        messages.warning(request, scan.input_warning)
        message += f" {scan.input_warning}"
    if wants_json(request):
        return JsonResponse(
            {"redirect": result_url, "scan": str(scan.pk), "prediction": str(prediction.pk), "message": message},
            status=201,
        )
    return redirect(result_url)
