"""API tokens: one per user (``rest_framework.authtoken``), issued, rotated and revoked here and audited.

Admins manage any user's token in the Django admin (``Auth Token > Tokens``); the admin writes its own audit rows.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from accounts.models import AuditAction, User
from accounts.services import record_audit_event


class TokenRefused(Exception):
    """The credentials are right but the account may not have a token yet (e.g. unverified email)."""


class TokenRateLimited(Exception):
    """Too many failed sign-ins for this account (or from this address): the exchange is not even tried."""


def _lock_token_of(user: User) -> None:
    """One change of a user's token at a time (the caller's transaction holds the user's row): two rotations at once
    (a double click) both deleted, then both inserted, and the second insert broke one-token-per-user (a 500)."""
    User.objects.select_for_update().filter(pk=user.pk).first()


def user_may_hold_token(*, user: User) -> str:
    """'' when ``user`` may hold an API token, else the reason in words."""
    if not user.is_active:
        return "This account is inactive."
    if getattr(settings, "ACCOUNT_EMAIL_VERIFICATION", "none") == "mandatory":
        from allauth.account.utils import has_verified_email

        if not has_verified_email(user):
            return "Verify your email address before you use the API."
    return ""


@transaction.atomic
def api_token_get_or_create(*, user: User, request: HttpRequest | None = None) -> tuple[Token, bool]:
    """The user's token, created on first use (several integrations of one user share it)."""
    reason = user_may_hold_token(user=user)
    if reason:
        raise TokenRefused(reason)
    _lock_token_of(user)
    token, created = Token.objects.get_or_create(user=user)
    if created:
        record_audit_event(action=AuditAction.TOKEN_CREATE, actor=user, target=user, request=request)
    return token, created


@transaction.atomic
def api_token_sign_in(*, username: str, password: str, request: HttpRequest | None = None) -> Token | None:
    """Exchange a username (or email) and password for the user's token (``POST /api/v1/auth/token/``).

    None when the credentials are wrong (Django's ``user_login_failed`` signal audits that attempt). A successful
    exchange is a sign-in with a password and is audited as one (``via: api_token``), whether or not the token
    already existed. Raises TokenRefused when the account may not hold a token.
    """
    from allauth.account.adapter import get_adapter

    try:
        # allauth's authenticate counts failures against the same per-account limit as the sign-in page: an account
        # locked there is locked here, and guesses here count there.
        user = get_adapter(request).authenticate(request, username=username, password=password)
    except ValidationError as exc:
        raise TokenRateLimited(" ".join(exc.messages)) from exc
    if user is None:
        return None
    token, created = api_token_get_or_create(user=user, request=request)
    record_audit_event(
        action=AuditAction.SIGN_IN,
        actor=user,
        target=user,
        request=request,
        details={"via": "api_token", "token_created": created},
    )
    return token


@transaction.atomic
def api_token_rotate(*, user: User, request: HttpRequest | None = None) -> Token:
    """Replace the user's token by a new one (the old one stops working at once)."""
    reason = user_may_hold_token(user=user)
    if reason:
        raise TokenRefused(reason)
    _lock_token_of(user)
    existed = Token.objects.filter(user=user).delete()[0] > 0
    token = Token.objects.create(user=user)
    record_audit_event(
        action=AuditAction.TOKEN_ROTATE if existed else AuditAction.TOKEN_CREATE,
        actor=user,
        target=user,
        request=request,
    )
    return token


@transaction.atomic
def api_token_revoke(*, user: User, request: HttpRequest | None = None, reason: str = "") -> bool:
    """Delete the user's token; True when there was one. ``reason`` is audited when the user did not ask (a new
    password ends the old token: accounts.signals.api_token_ends_with_the_password)."""
    _lock_token_of(user)
    revoked = Token.objects.filter(user=user).delete()[0] > 0
    if revoked:
        details = {"reason": reason} if reason else {}
        record_audit_event(action=AuditAction.TOKEN_REVOKE, actor=user, target=user, request=request, details=details)
    return revoked


def api_token_get(*, user: User) -> Token | None:
    return Token.objects.filter(user=user).first()
