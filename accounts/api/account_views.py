"""The account-page hook for API tokens: ``/account/api-token/`` (the pages link to it by ``account-api-token``).

GET shows whether the user has a token; POST ``action=create`` creates or replaces it and shows the key once;
POST ``action=revoke`` deletes it. Session sign-in and CSRF as on every page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.api.services import TokenRefused, api_token_get, api_token_revoke, api_token_rotate


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_token_page(request: HttpRequest) -> HttpResponse:
    new_key = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            try:
                new_key = api_token_rotate(user=request.user, request=request).key
            except TokenRefused as exc:
                messages.error(request, str(exc))
                return redirect("account-api-token")
        elif action == "revoke":
            if api_token_revoke(user=request.user, request=request):
                messages.success(request, "Your API token was revoked; integrations using it stop working now.")
            else:
                messages.info(request, "You had no API token.")
            return redirect("account-api-token")
        else:
            messages.error(request, "Unknown action.")
            return redirect("account-api-token")
    token = api_token_get(user=request.user)
    return render(request, "account/api_token.html", {"token": token, "new_key": new_key})
