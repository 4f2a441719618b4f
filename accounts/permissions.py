"""Who may do what. Deny by default: a user without an organization, or inactive, may do nothing.

Visibility (documented in docs/CORE.md):
- clinician: sees, creates and uploads to every case of their own organization (a hospital team shares its worklist)
- auditor: read-only oversight of every case and prediction of their organization; cannot create or upload
- admin: everything a clinician may do in their organization, plus managing its users
Nobody sees another organization's records: selectors filter by organization and views answer 404.
Model versions are global and managed by platform staff (is_staff) in the Django admin.
"""

from __future__ import annotations

from typing import Any

from accounts.models import Role


def _member(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and getattr(user, "organization_id", None)
    )


def user_can_read(user: Any) -> bool:
    """May the user read the clinical records of their organization?"""
    return _member(user) and user.role in (Role.CLINICIAN, Role.AUDITOR, Role.ADMIN)


def user_can_write(user: Any) -> bool:
    """May the user create cases, upload scans and request predictions in their organization?"""
    return _member(user) and user.role in (Role.CLINICIAN, Role.ADMIN)


def user_can_manage_members(user: Any) -> bool:
    return _member(user) and user.role == Role.ADMIN


def user_can_audit(user: Any) -> bool:
    """May the user read their organization's audit trail?"""
    return _member(user) and user.role in (Role.AUDITOR, Role.ADMIN)


def user_can_read_record(user: Any, organization_id: Any) -> bool:
    return user_can_read(user) and user.organization_id == organization_id


def user_can_write_record(user: Any, organization_id: Any) -> bool:
    return user_can_write(user) and user.organization_id == organization_id
