"""Writes for accounts: organizations, sign-up completion and the audit trail."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.http import HttpRequest

from accounts.models import AuditAction, AuditEvent, Organization, Role, User


def client_ip(request: HttpRequest | None) -> str | None:
    """The client address as Django sees it. Behind a proxy, configure the proxy to set REMOTE_ADDR (we do not trust
    X-Forwarded-For blindly: any client can forge it)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


# The links from a record up to the one that names its organization: heat map -> prediction -> scan -> case; tokens
# and email addresses belong to a user.
_PARENTS = ("case", "scan", "prediction", "user")


def organization_of(record: models.Model | None) -> Organization | None:
    """The organization a record belongs to: an organization itself, a record's ``organization`` (cases, users), or
    that of the record it hangs from (scans, slices, predictions, heat maps, a user's token); None for others."""
    for _ in range(len(_PARENTS) + 1):
        if record is None or isinstance(record, Organization):
            return record
        organization = getattr(record, "organization", None)
        if isinstance(organization, Organization):
            return organization
        record = next((getattr(record, name) for name in _PARENTS if hasattr(record, name)), None)
    return None


def admin_change_organization(*, record: models.Model | None, deletion: bool) -> Organization | None:
    """The organization whose audit trail records a staff member's admin change to ``record``: the record's own (a
    change to organization B's case is B's business), else None, which lets record_audit_event fall back to the staff
    member's. An organization being deleted takes its trail with it, so its deletion goes to the staff member's."""
    if deletion and isinstance(record, Organization):
        return None
    return organization_of(record)


def record_audit_event(
    *,
    action: str,
    actor: User | None = None,
    organization: Organization | None = None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    request: HttpRequest | None = None,
    ip_address: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit row. Call it inside the transaction of the action it records, so both commit or neither.

    ``target`` fills target type/id from a model instance; the organization defaults to the target's
    (``organization_of``) or the actor's.
    """
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
    if organization is None:
        organization = organization_of(target) or getattr(actor, "organization", None)
    return AuditEvent.objects.create(
        action=str(action),
        actor=actor,
        actor_username=actor.get_username() if actor is not None else "",
        organization=organization,
        target_type=target_type,
        target_id=str(target_id),
        ip_address=ip_address or client_ip(request),
        details=details or {},
    )


@transaction.atomic
def organization_create(*, name: str, actor: User | None = None) -> Organization:
    """Create an organization with a unique slug."""
    name = name.strip()
    if not name:
        raise ValueError("An organization needs a name.")
    organization = Organization.objects.create(name=name, slug=Organization.unique_slug(name))
    record_audit_event(
        action=AuditAction.ORGANIZATION_CREATE, actor=actor, organization=organization, target=organization
    )
    return organization


@transaction.atomic
def user_signup_complete(*, user: User, organization_name: str, request: HttpRequest | None = None) -> User:
    """Finish a self-service sign-up: found a new organization and make the user its first clinician.

    Joining an existing organization is never done by typing its name (anyone could); an organization admin or the
    platform staff moves or adds users in the admin instead.
    """
    organization = organization_create(name=organization_name, actor=user)
    user.organization = organization
    user.role = Role.CLINICIAN
    user.save(update_fields=["organization", "role"])
    record_audit_event(action=AuditAction.SIGN_UP, actor=user, organization=organization, target=user, request=request)
    return user
