"""Tokens (issue, rotate, revoke, admin), /me, the account-page hook and the token-issue throttle."""

from __future__ import annotations

import pytest
from django.contrib import admin
from rest_framework.authtoken.models import Token

from accounts.models import AuditEvent
from tests.conftest import PASSWORD

TOKEN_URL = "/api/v1/auth/token/"


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], dict)
    return body


@pytest.mark.parametrize("login", ["username", "email"])
def test_token_for_username_or_email_then_token_auth(api_client, clinician, login):
    response = api_client.post(TOKEN_URL, {"username": getattr(clinician, login), "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    key = response.json()["token"]
    assert Token.objects.get(user=clinician).key == key
    # The same token again: one per user.
    again = api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json")
    assert again.json()["token"] == key

    api_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    me = api_client.get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json()["username"] == clinician.username
    assert me.json()["role"] == "clinician"
    assert me.json()["organization"]["id"] == str(clinician.organization_id)
    assert me.json()["permissions"] == {"read": True, "write": True, "audit": False, "manage_members": False}
    assert me.json()["has_api_token"] is True
    assert AuditEvent.objects.filter(action="auth.token_create", actor=clinician).count() == 1


def test_wrong_password_is_a_400_in_the_error_shape_and_audited(api_client, clinician):
    response = api_client.post(TOKEN_URL, {"username": clinician.username, "password": "nope"}, format="json")
    body = assert_error_shape(response, 400)
    assert "Unable to sign in" in body["detail"]
    assert body["errors"] == {"non_field_errors": ["Unable to sign in with these credentials."]}
    assert not Token.objects.exists()
    assert AuditEvent.objects.filter(action="auth.sign_in_failed").exists()


def test_missing_fields_name_the_fields(api_client, db):
    body = assert_error_shape(api_client.post(TOKEN_URL, {}, format="json"), 400)
    assert set(body["errors"]) == {"username", "password"}
    assert body["code"] == "required"


def test_malformed_json_is_a_400_in_the_error_shape(api_client, db):
    response = api_client.post(TOKEN_URL, data="{not json", content_type="application/json")
    assert_error_shape(response, 400)


def test_unverified_email_gets_no_token(api_client, make_user, organization):
    from allauth.account.models import EmailAddress

    user = make_user(organization=organization)
    EmailAddress.objects.filter(user=user).update(verified=False)
    body = assert_error_shape(
        api_client.post(TOKEN_URL, {"username": user.username, "password": PASSWORD}, format="json"), 400
    )
    assert "Verify your email" in body["detail"]


def test_inactive_user_gets_no_token(api_client, clinician):
    clinician.is_active = False
    clinician.save()
    assert_error_shape(
        api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json"), 400
    )


def test_revoke_and_rotate(client_for, clinician):
    client = client_for(clinician)
    old = Token.objects.get(user=clinician).key
    rotated = client.post("/api/v1/me/token/")
    assert rotated.status_code == 201
    new = rotated.json()["token"]
    assert new != old
    assert_error_shape(client.get("/api/v1/me/"), 401)  # the old token stopped working at once
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.get("/api/v1/me/token/").json()["exists"] is True
    assert client.delete(TOKEN_URL).status_code == 204
    body = assert_error_shape(client.get("/api/v1/me/"), 401)
    assert body["code"] == "authentication_failed"
    assert not Token.objects.filter(user=clinician).exists()
    assert AuditEvent.objects.filter(action="auth.token_revoke", actor=clinician).count() == 1


def test_anonymous_is_401_with_www_authenticate(api_client, db):
    response = api_client.get("/api/v1/cases/")
    body = assert_error_shape(response, 401)
    assert response["WWW-Authenticate"] == "Token"
    assert body["code"] == "not_authenticated"


def test_session_auth_for_the_browser(clinician_client, clinician):
    response = clinician_client.get("/api/v1/me/")
    assert response.status_code == 200 and response.json()["username"] == clinician.username


def test_user_without_organization_sees_nothing(client_for, make_user):
    user = make_user(organization=None)
    client = client_for(user)
    me = client.get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["organization"] is None
    assert me.json()["permissions"]["read"] is False
    for url in ("/api/v1/cases/", "/api/v1/scans/", "/api/v1/predictions/", "/api/v1/models/"):
        assert_error_shape(client.get(url), 403)


def test_token_issue_is_throttled(api_client, clinician, settings):
    settings.HEMO_API_THROTTLE_RATES = {**settings.HEMO_API_THROTTLE_RATES, "token": "3/minute"}
    for _ in range(3):
        assert (
            api_client.post(TOKEN_URL, {"username": clinician.username, "password": "wrong"}, format="json").status_code
            == 400
        )
    response = api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json")
    body = assert_error_shape(response, 429)
    assert body["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    settings.HEMO_API_THROTTLE_RATES = {**settings.HEMO_API_THROTTLE_RATES, "token": "100/minute"}
    assert (
        api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json").status_code
        == 200
    )


def test_tokens_are_managed_in_the_django_admin(client, make_user, organization, clinician, token_for):
    from rest_framework.authtoken.models import TokenProxy

    assert TokenProxy in admin.site._registry
    token_for(clinician)
    staff = make_user(role="admin", organization=organization, username="staff", is_staff=True, is_superuser=True)
    client.force_login(staff, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/admin/authtoken/tokenproxy/")
    assert response.status_code == 200 and clinician.username in response.content.decode()


def test_account_page_creates_shows_once_and_revokes(clinician_client, clinician):
    url = "/account/api-token/"
    page = clinician_client.get(url)
    assert page.status_code == 200 and "You have no token" in page.content.decode()
    created = clinician_client.post(url, {"action": "create"})
    key = Token.objects.get(user=clinician).key
    assert created.status_code == 200 and key in created.content.decode()
    assert key not in clinician_client.get(url).content.decode()  # shown only once
    revoked = clinician_client.post(url, {"action": "revoke"})
    assert revoked.status_code == 302 and not Token.objects.filter(user=clinician).exists()


def test_account_page_needs_sign_in(client, db):
    response = client.get("/account/api-token/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_unknown_api_path_is_a_json_404(client_for, clinician):
    body = assert_error_shape(client_for(clinician).get("/api/v1/nothing-here/"), 404)
    assert body["code"] == "not_found"
    assert_error_shape(client_for(clinician).get("/api/v1/cases/not-a-uuid/"), 404)


def test_a_missing_trailing_slash_is_explained(client_for, clinician):
    body = assert_error_shape(client_for(clinician).post("/api/v1/cases", {"patient_ref": "X-1"}, format="json"), 404)
    assert "end with a slash: /api/v1/cases/" in body["detail"]


def test_post_to_an_unknown_path_is_a_json_404_not_a_csrf_page(clinician):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician, backend="django.contrib.auth.backends.ModelBackend")
    assert_error_shape(client.post("/api/v1/predictions/nonsense/rerun/", {}), 404)


def test_session_writes_need_the_csrf_token(clinician):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician, backend="django.contrib.auth.backends.ModelBackend")
    body = assert_error_shape(
        client.post("/api/v1/cases/", {"patient_ref": "CSRF-001"}, content_type="application/json"), 403
    )
    assert "CSRF" in body["detail"]


def test_errors_of_file_endpoints_are_labelled_json(client_for, clinician):
    response = client_for(clinician).get(
        "/api/v1/predictions/00000000-0000-0000-0000-000000000000/heatmaps/0/", HTTP_ACCEPT="image/png"
    )
    body = assert_error_shape(response, 404)
    assert body["code"] == "not_found"


def test_a_forged_forwarded_for_header_does_not_escape_the_token_throttle(api_client, clinician, settings):
    settings.HEMO_API_THROTTLE_RATES = {**settings.HEMO_API_THROTTLE_RATES, "token": "2/minute"}
    statuses = [
        api_client.post(
            TOKEN_URL,
            {"username": clinician.username, "password": "guess"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
        ).status_code
        for i in range(4)
    ]
    assert statuses == [400, 400, 429, 429]


def test_token_exchange_shares_the_sign_in_pages_per_account_lockout(api_client, client, clinician):
    """Guesses through the API count against the account as the page's do, and an account the page locked is locked
    for the exchange too (allauth's login_failed limit: 5 per account in 5 minutes)."""
    from django.core.cache import cache
    from django.urls import reverse

    for _ in range(5):
        assert api_client.post(TOKEN_URL, {"username": clinician.username, "password": "guess-1"}).status_code == 400
    locked = api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json")
    body = assert_error_shape(locked, 429)
    assert "Too many failed login attempts" in body["detail"] and not Token.objects.exists()
    assert locked["Retry-After"] == "300"
    page = client.post(reverse("account_login"), {"login": clinician.username, "password": PASSWORD})
    assert page.status_code == 200 and b"Too many failed login attempts" in page.content  # the page agrees

    cache.clear()
    for _ in range(5):
        client.post(reverse("account_login"), {"login": clinician.username, "password": "guess-2"})
    refused = api_client.post(TOKEN_URL, {"username": clinician.username, "password": PASSWORD}, format="json")
    assert refused.status_code == 429 and not Token.objects.exists()


def test_a_new_password_ends_the_api_token(api_client, clinician, clinician_client, token_for):
    from django.urls import reverse

    old = token_for(clinician)
    new_password = "another-horse-battery-7"
    response = clinician_client.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": new_password, "password2": new_password},
    )
    assert response.status_code == 302, response.content
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert api_client.get("/api/v1/me/").status_code == 401
    revoked = AuditEvent.objects.get(action="auth.token_revoke", actor=clinician)
    assert revoked.details == {"reason": "password changed"}
    api_client.credentials()
    fresh = api_client.post(TOKEN_URL, {"username": clinician.username, "password": new_password}, format="json")
    assert fresh.status_code == 200 and fresh.json()["token"] != old
    clinician.refresh_from_db()
    clinician.is_staff = False  # another save without a new password keeps the token
    clinician.save()
    assert Token.objects.filter(user=clinician, key=fresh.json()["token"]).exists()


def test_rotations_at_the_same_moment_each_get_a_token_and_leave_one(transactional_db, clinician):
    """A double click on "Create a new token": both requests succeed, one token stays (it was a 500 on PostgreSQL)."""
    import threading

    from django.db import connection

    from accounts.api.services import api_token_rotate

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (concurrent transactions); scripts/test.sh sets DATABASE_URL")

    def rotate(start: threading.Barrier, results: list) -> None:
        try:
            start.wait(10)
            results.append(api_token_rotate(user=clinician).key)
        except Exception as exc:  # noqa: BLE001 - the failure is what the test reports
            results.append(exc)
        finally:
            connection.close()

    for _ in range(5):
        start, results = threading.Barrier(4), []
        threads = [threading.Thread(target=rotate, args=(start, results)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(isinstance(r, str) for r in results) and len(results) == 4, results
        assert Token.objects.filter(user=clinician).count() == 1
        assert Token.objects.get(user=clinician).key in results
