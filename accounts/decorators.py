"""Who may open a page: every page view names one of these (deny by default).

Anonymous users are sent to sign-in; signed-in users without the permission get 403. Records of other
organizations are not a matter for these decorators: the selectors answer 404 for them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from accounts.permissions import user_can_audit, user_can_manage_members, user_can_read, user_can_write


def _requires(check: Callable[[object], bool], message: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not check(request.user):
                raise PermissionDenied(message)
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator


member_required = _requires(user_can_read, "Your account is not a member of an organization.")
writer_required = _requires(user_can_write, "Your role is read-only: you may not create cases or upload scans.")
auditor_required = _requires(user_can_audit, "Only auditors and administrators may see the audit pages.")
member_manager_required = _requires(
    user_can_manage_members, "Only an administrator of the organization may manage its members."
)
