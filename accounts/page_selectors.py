"""Reads for the audit pages, built on accounts.selectors (empty for users who may not audit)."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from accounts.models import AuditEvent, User
from accounts.permissions import user_can_audit, user_can_manage_members
from accounts.selectors import audit_event_list


def organization_members(*, user: User) -> QuerySet[User]:
    """The members of the auditor's organization (for filter choices); empty for users who may not audit."""
    if not user_can_audit(user):
        return User.objects.none()
    return User.objects.filter(organization_id=user.organization_id).order_by("username")


def organization_member_list(*, user: User) -> list[User]:
    """The members of the admin's organization for the members page (each with ``invited``: no password set yet);
    empty for users who may not manage members."""
    if not user_can_manage_members(user):
        return []
    members = list(User.objects.filter(organization_id=user.organization_id).order_by("username"))
    for member in members:
        member.invited = not member.has_usable_password()
    return members


def audit_event_list_filtered(
    *,
    user: User,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    action: str = "",
    actor: str = "",
    target: str = "",
) -> QuerySet[AuditEvent]:
    """The organization's audit trail, newest first, filtered by day range (UTC), action, actor id or target id."""
    events = audit_event_list(user=user)
    if date_from:
        events = events.filter(created__date__gte=date_from)
    if date_to:
        events = events.filter(created__date__lte=date_to)
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(actor_id=actor)
    if target:
        events = events.filter(target_id=target.strip())
    return events
