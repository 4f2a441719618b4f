"""The password-link token: allauth's (user, password, last sign-in, email addresses, time), and whether the account
is active, so that a link sent before a member was deactivated no longer works after."""

from __future__ import annotations

from allauth.account.forms import EmailAwarePasswordResetTokenGenerator


class ActiveAwarePasswordResetTokenGenerator(EmailAwarePasswordResetTokenGenerator):
    def _make_hash_value(self, user, timestamp) -> str:
        return f"{super()._make_hash_value(user, timestamp)}|active={user.is_active}"
