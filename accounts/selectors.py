"""Reads for accounts."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import AuditEvent, User
from accounts.permissions import user_can_audit


def audit_event_list(*, user: User) -> QuerySet[AuditEvent]:
    """The audit trail of the user's organization, newest first; empty for users who may not audit."""
    if not user_can_audit(user):
        return AuditEvent.objects.none()
    return AuditEvent.objects.filter(organization_id=user.organization_id).select_related("actor")
