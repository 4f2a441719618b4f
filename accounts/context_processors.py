"""What every page template needs to know about the signed-in user's rights (for the navigation and buttons)."""

from __future__ import annotations

from django.http import HttpRequest

from accounts.permissions import user_can_audit, user_can_manage_members, user_can_read, user_can_write


def permissions(request: HttpRequest) -> dict[str, bool]:
    user = getattr(request, "user", None)
    return {
        "can_read": user_can_read(user),
        "can_write": user_can_write(user),
        "can_audit": user_can_audit(user),
        "can_manage_members": user_can_manage_members(user),
    }
