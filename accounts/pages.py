"""Public landing page and the audit-trail page."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from accounts.decorators import auditor_required
from accounts.page_forms import AuditEventFilterForm
from accounts.page_selectors import audit_event_list_filtered, organization_members
from accounts.permissions import user_can_read

EVENTS_PER_PAGE = 50


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Anyone: what the platform does. Signed-in members go straight to their dashboard."""
    if user_can_read(request.user):
        return redirect("cases:dashboard")
    return render(request, "home.html")


@require_GET
@auditor_required
def audit_events(request: HttpRequest) -> HttpResponse:
    form = AuditEventFilterForm(request.GET or None, members=organization_members(user=request.user))
    filters = form.cleaned_data if form.is_valid() else {}
    events = audit_event_list_filtered(
        user=request.user,
        date_from=filters.get("date_from"),
        date_to=filters.get("date_to"),
        action=filters.get("action", ""),
        actor=filters.get("actor", ""),
        target=filters.get("target", ""),
    )
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "audit/events.html", {"form": form, "page": page})
