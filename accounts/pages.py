"""Public landing page, the audit-trail page and the organization's members page."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from accounts import services
from accounts.decorators import auditor_required, member_manager_required
from accounts.exports import audit_export_record, csv_download, export_query, invalid_filters_response
from accounts.models import AuditAction, AuditEvent, Role
from accounts.page_forms import AuditEventFilterForm, MemberAddForm
from accounts.page_selectors import audit_event_list_filtered, organization_member_list, organization_members
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
    if form.is_bound and not form.is_valid():  # errors shown and no rows: never the whole trail as if it matched
        events = AuditEvent.objects.none()
    else:
        events = audit_event_list_filtered(user=request.user, **(form.cleaned_data if form.is_bound else {}))
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "audit/events.html", {"form": form, "page": page, "export_query": export_query(request.GET)})


EVENT_EXPORT_HEADER = ["time", "actor", "action", "action_label", "target_type", "target_id", "ip_address", "details"]


@require_GET
@auditor_required
def audit_events_export(request: HttpRequest) -> HttpResponse:
    """The audit trail as CSV, with the page's filters (which must be valid: an export never widens silently)."""
    form = AuditEventFilterForm(request.GET, members=organization_members(user=request.user))
    if not form.is_valid():
        return invalid_filters_response(form)
    events = audit_event_list_filtered(user=request.user, **form.cleaned_data)
    audit_export_record(
        user=request.user, export="audit_events", filters=form.cleaned_data, rows=events.count(), request=request
    )
    labels = dict(AuditAction.choices)
    rows = (
        [
            e.created,
            e.actor_username,
            e.action,
            labels.get(e.action, ""),
            e.target_type,
            e.target_id,
            e.ip_address,
            json.dumps(e.details, sort_keys=True, ensure_ascii=False),
        ]
        for e in events.iterator(chunk_size=500)
    )
    return csv_download(name="audit-events", header=EVENT_EXPORT_HEADER, rows=rows)


@never_cache
@member_manager_required
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest) -> HttpResponse:
    """An organization admin's page: the members, adding one (they get a link to set a password), changing a role,
    deactivating or reactivating an account, sending a new link. Every change is audited (member.add, member.change).
    POST-redirect-GET; another organization's user id answers 404."""
    form = MemberAddForm()
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "add":
                form = MemberAddForm(request.POST)
                if form.is_valid():
                    member, mail_error = services.member_add_and_invite(
                        actor=request.user, request=request, **form.cleaned_data
                    )
                    if mail_error:
                        messages.warning(
                            request,
                            f"{member.username} was added, but the email to {member.email} could not be sent "
                            f"({mail_error}). Use “Send a new link” once mail works.",
                        )
                    else:
                        sent = f"a link to set a password was sent to {member.email}"
                        messages.success(request, f"{member.username} was added; {sent}.")
                    return redirect("account-members")
            elif action == "role":
                role = request.POST.get("role", "")
                member = services.member_update(
                    actor=request.user, member_id=request.POST.get("member"), role=role, request=request
                )
                messages.success(request, f"{member.username} is now {member.get_role_display().lower()}.")
                return redirect("account-members")
            elif action in ("deactivate", "activate"):
                member = services.member_update(
                    actor=request.user,
                    member_id=request.POST.get("member"),
                    active=action == "activate",
                    request=request,
                )
                messages.success(request, f"{member.username} was {action}d.")
                return redirect("account-members")
            elif action == "resend":
                try:
                    member = services.member_invitation_resend(
                        actor=request.user, member_id=request.POST.get("member"), request=request
                    )
                except OSError as exc:  # the mail server: nothing else changed
                    messages.error(request, f"The email could not be sent ({exc}); try again once mail works.")
                else:
                    messages.success(request, f"A new link to set a password was sent to {member.email}.")
                return redirect("account-members")
            else:
                messages.error(request, "Unknown action.")
                return redirect("account-members")
        except services.MemberRefused as exc:
            if action != "add":
                messages.error(request, str(exc))
                return redirect("account-members")
            form.add_error(None, str(exc))
        status = 400
    else:
        status = 200
    context = {"form": form, "members": organization_member_list(user=request.user), "roles": Role.choices}
    return render(request, "account/members.html", context, status=status)
