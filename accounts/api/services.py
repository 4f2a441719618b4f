"""API tokens: one per user (``rest_framework.authtoken``), issued, rotated and revoked here and audited.

Admins manage any user's token in the Django admin (``Auth Token > Tokens``); the admin writes its own audit rows.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from accounts.models import AuditAction, User
from accounts.services import record_audit_event


class TokenRefused(Exception):
    """The credentials are right but the account may not have a token yet (e.g. unverified email)."""


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
    user = authenticate(request, username=username, password=password)
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
def api_token_revoke(*, user: User, request: HttpRequest | None = None) -> bool:
    """Delete the user's token; True when there was one."""
    revoked = Token.objects.filter(user=user).delete()[0] > 0
    if revoked:
        record_audit_event(action=AuditAction.TOKEN_REVOKE, actor=user, target=user, request=request)
    return revoked


def api_token_get(*, user: User) -> Token | None:
    return Token.objects.filter(user=user).first()
