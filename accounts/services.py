"""Writes for accounts: organizations, sign-up completion, members and the audit trail."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import models, transaction
from django.http import Http404, HttpRequest

from accounts.models import AuditAction, AuditEvent, Organization, Role, User
from accounts.permissions import user_can_manage_members

logger = logging.getLogger(__name__)


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

    Joining an existing organization is never done by typing its name (anyone could); an admin of that organization
    adds the person on the members page (`member_add`). An organization's first admin is appointed by platform
    staff (the Django admin, or `createsuperuser`), never by signing up, and admins may appoint further ones: an
    admin adds accounts for addresses it names, which only a trusted person may do where anyone can sign up.
    """
    organization = organization_create(name=organization_name, actor=user)
    user.organization = organization
    user.role = Role.CLINICIAN
    user.save(update_fields=["organization", "role"])
    record_audit_event(action=AuditAction.SIGN_UP, actor=user, organization=organization, target=user, request=request)
    return user


class MemberRefused(ValueError):
    """A member change that is not allowed or not valid; the message says why, for the person who asked."""


def _managed_member(*, actor: User, member_id: Any) -> User:
    """A member of the actor's organization, or Http404 (another organization's user is as unknown as none, and so
    is an id that is no id). The organization's active admins are locked first and the actor is read again among
    them, so two admins changing each other at the same moment cannot both succeed (and leave none)."""
    admins = User.objects.select_for_update().filter(
        organization_id=actor.organization_id, role=Role.ADMIN, is_active=True
    )
    if not user_can_manage_members(actor) or actor.pk not in {u.pk for u in admins}:
        raise PermissionDenied("Only an administrator of the organization may manage its members.")
    try:
        member_id = uuid.UUID(str(member_id))
    except ValueError:
        raise Http404("No such member.") from None
    member = User.objects.filter(pk=member_id, organization_id=actor.organization_id).first()
    if member is None:
        raise Http404("No such member.")
    return member


def _member_event(action: str, *, actor: User, member: User, request: HttpRequest | None, **details: Any) -> None:
    record_audit_event(
        action=action,
        actor=actor,
        organization=actor.organization,
        target=member,
        request=request,
        details={"username": member.username, **details},
    )


@transaction.atomic
def member_add(*, actor: User, username: str, email: str, role: str, request: HttpRequest | None = None) -> User:
    """An admin adds a colleague to their organization: the account has no password until its owner sets one through
    the link sent to the address (`member_invitation_send`; the page calls `member_add_and_invite`); using the link
    verifies the address, so the first sign-in needs no confirmation."""
    if not user_can_manage_members(actor):
        raise PermissionDenied("Only an administrator of the organization may add members.")
    # allauth keeps addresses in lower case; another case would give the account a second, unverified address.
    username, email = username.strip(), email.strip().lower()
    if role not in Role.values:
        raise MemberRefused(f"Unknown role {role!r}.")
    if User.objects.filter(username__iexact=username).exists():
        raise MemberRefused(f"The username {username!r} is taken.")
    if User.objects.filter(email__iexact=email).exists() or EmailAddress.objects.filter(email__iexact=email).exists():
        raise MemberRefused(f"An account with the email address {email} exists already.")
    member = User(username=username, email=email, organization=actor.organization, role=role)
    member.set_unusable_password()
    try:
        member.full_clean(exclude=["password"])
    except ValidationError as exc:
        raise MemberRefused(" ".join(exc.messages)) from exc
    member.save()
    # Verified only when the emailed link is used (`email_verified_by_password_link`): the link proves the address.
    EmailAddress.objects.create(user=member, email=email, verified=False, primary=True)
    _member_event(AuditAction.MEMBER_ADD, actor=actor, member=member, request=request, role=role)
    return member


def member_add_and_invite(
    *, actor: User, username: str, email: str, role: str, request: HttpRequest | None = None
) -> tuple[User, str]:
    """`member_add`, committed, then the link to set a password (`member_invitation_send`). Returns the member and
    "" or why the email could not be sent: the account exists whatever the mail server says, and the admin can send
    a new link from the page, so a mail failure is told, not turned into an error page for an addition that happened.
    """
    member = member_add(actor=actor, username=username, email=email, role=role, request=request)
    try:
        member_invitation_send(member=member, actor=actor, request=request)
    except OSError as exc:  # smtplib's errors and connection failures are OSErrors
        logger.warning("link to set a password for %s not sent: %s", member.username, exc)
        return member, str(exc) or exc.__class__.__name__
    return member, ""


def member_invitation_send(*, member: User, actor: User, request: HttpRequest | None = None) -> None:
    """Email the member a link to set their password (allauth's password-reset link: valid for
    PASSWORD_RESET_TIMEOUT, once; it stops working when the password is set)."""
    from allauth.account import app_settings as allauth_settings
    from allauth.account.adapter import get_adapter
    from allauth.account.utils import user_pk_to_url_str

    token = allauth_settings.PASSWORD_RESET_TOKEN_GENERATOR().make_token(member)
    url = get_adapter(request).get_reset_password_from_key_url(f"{user_pk_to_url_str(member)}-{token}")
    days = max(1, round(settings.PASSWORD_RESET_TIMEOUT / 86400))
    send_mail(
        f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}You were added to {member.organization}",
        f"{actor.get_username()} added you to {member.organization} on HemoPlatform as "
        f"{member.get_role_display().lower()}, with the username {member.get_username()}.\n\n"
        f"Set your password here (the link works once, for {days} days):\n{url}\n\n"
        "Then sign in with your username or this email address.\n",
        None,
        [member.email],
    )
    # Audited once sent: a link the mail server refused was never issued to anyone.
    _member_event(AuditAction.MEMBER_INVITE, actor=actor, member=member, request=request, email=member.email)


@transaction.atomic
def member_update(
    *,
    actor: User,
    member_id: Any,
    role: str | None = None,
    active: bool | None = None,
    request: HttpRequest | None = None,
) -> User:
    """Change a member's role, or deactivate / reactivate the account (never deleted: the audit trail names it). An
    admin cannot change their own role or deactivate themselves, so an organization always keeps an admin who can
    undo a change. A deactivated member can no longer sign in or use an API token."""
    member = _managed_member(actor=actor, member_id=member_id)
    if member.pk == actor.pk:
        raise MemberRefused("You cannot change your own role or deactivate yourself; ask another administrator.")
    if member.is_staff or member.is_superuser:
        raise MemberRefused(f"{member.username} is platform staff; only platform staff change that account.")
    changes = {}
    if role is not None and role != member.role:
        if role not in Role.values:
            raise MemberRefused(f"Unknown role {role!r}.")
        changes["role"] = [member.role, role]
        member.role = role
    if active is not None and active != member.is_active:
        changes["is_active"] = [member.is_active, active]
        member.is_active = active
    if changes:
        fields = list(changes)  # the keys are the field names
        if active is False and not member.has_usable_password():
            # A new unusable password: links to set one that were sent before (their token covers the password
            # hash) stay dead after a reactivation; the admin sends a new link then.
            member.set_unusable_password()
            fields.append("password")
        member.save(update_fields=fields)
        _member_event(AuditAction.MEMBER_CHANGE, actor=actor, member=member, request=request, changes=changes)
    return member


def member_invitation_resend(*, actor: User, member_id: Any, request: HttpRequest | None = None) -> User:
    """Send a member who has not set a password yet a new link (the old one may have expired). The checks run under
    the admins' lock; the mail is sent after it is released, so a slow mail server holds no row."""
    with transaction.atomic():
        member = _managed_member(actor=actor, member_id=member_id)
        if member.has_usable_password():
            raise MemberRefused(
                f"{member.username} has set a password already; they can reset it from the sign-in page."
            )
        if not member.is_active:
            raise MemberRefused(f"{member.username} is deactivated; reactivate the account first.")
    member_invitation_send(member=member, actor=actor, request=request)
    return member
