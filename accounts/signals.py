"""Audit rows for events Django and allauth announce by signal (sign-in, sign-out, admin changes)."""

from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.account.signals import password_reset
from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Q
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import AuditAction, User
from accounts.services import admin_change_organization, client_ip, record_audit_event


@receiver(user_logged_in, dispatch_uid="accounts.audit_sign_in")
def audit_sign_in(sender, request, user, **kwargs):
    # Fires for allauth's sign-in and the admin's alike, so one receiver covers both.
    record_audit_event(action=AuditAction.SIGN_IN, actor=user, target=user, request=request)


@receiver(user_logged_out, dispatch_uid="accounts.audit_sign_out")
def audit_sign_out(sender, request, user, **kwargs):
    if user is not None:
        record_audit_event(action=AuditAction.SIGN_OUT, actor=user, target=user, request=request)


@receiver(user_login_failed, dispatch_uid="accounts.audit_sign_in_failed")
def audit_sign_in_failed(sender, credentials, request=None, **kwargs):
    # Credentials are already scrubbed of the password by Django; keep only the login name that was tried.
    tried = {k: v for k, v in credentials.items() if k in ("username", "email", "login")}
    # Against an existing account, the attempt belongs to that account's organization: its admins and auditors see
    # guessing at their colleagues' passwords in their own trail (an unknown name stays with platform staff).
    account = _account_named(next((str(v) for v in tried.values() if v), ""))
    record_audit_event(
        action=AuditAction.SIGN_IN_FAILED, target=account, ip_address=client_ip(request), details={"tried": tried}
    )


def _account_named(name: str) -> User | None:
    """The one account whose username or email is ``name`` (case-insensitive), else None."""
    if not name:
        return None
    matches = list(User.objects.filter(Q(username__iexact=name) | Q(email__iexact=name))[:2])
    return matches[0] if len(matches) == 1 else None


@receiver(post_save, sender=LogEntry, dispatch_uid="accounts.audit_admin_change")
def audit_admin_change(sender, instance: LogEntry, created: bool, **kwargs):
    # The admin writes a LogEntry inside the same transaction as the change it describes, and a deletion's before
    # the object is deleted: the object can still be read here.
    if not created:
        return
    try:
        edited = instance.get_edited_object() if instance.content_type_id and instance.object_id else None
    except (ObjectDoesNotExist, ValidationError, ValueError):
        edited = None
    record_audit_event(
        action=AuditAction.ADMIN_CHANGE,
        actor=instance.user,
        organization=admin_change_organization(record=edited, deletion=instance.is_deletion()),
        target_type=f"{instance.content_type.app_label}.{instance.content_type.model}" if instance.content_type else "",
        target_id=instance.object_id or "",
        details={
            "change": {1: "add", 2: "change", 3: "delete"}.get(instance.action_flag, str(instance.action_flag)),
            "object": instance.object_repr,
            "message": instance.get_change_message(),
        },
    )


@receiver(password_reset, dispatch_uid="accounts.email_verified_by_password_link")
def email_verified_by_password_link(sender, request, user, **kwargs):
    """A password set through the emailed link proves the address it was sent to: verify it where the account has
    that one address (a member added by an admin has exactly one), so their first sign-in needs no confirmation."""
    addresses = EmailAddress.objects.filter(user=user)
    if addresses.count() == 1:
        addresses.update(verified=True)


@receiver(post_save, sender=User, dispatch_uid="accounts.api_token_ends_with_the_password")
def api_token_ends_with_the_password(sender, instance: User, created: bool, **kwargs):
    """A new password (changed, reset, set by staff) revokes the API token: a reset after a compromise must also lock
    out a key that leaked with the password. ``_password`` holds the raw password from ``set_password`` until the
    save completes (AbstractBaseUser); Django's rehash of a stored hash at sign-in clears it first, so it is not a
    change."""
    if not created and getattr(instance, "_password", None) is not None:
        from accounts.api.services import api_token_revoke

        api_token_revoke(user=instance, reason="password changed")
