"""Security review checks through the real entry points (pages, API, admin): every action that matters leaves one
audit row, user text is escaped wherever it is shown, redirects never leave the site, and clinical files are only
reachable through permission-checked views."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import AuditAction, AuditEvent, Organization, User
from inference.models import Prediction, PredictionStatus
from scans.models import Scan
from scans.services import case_update
from tests.api.conftest import make_png
from tests.conftest import PASSWORD

XSS = '<script>alert("x")</script>'


@pytest.fixture
def active_model(fake_model_dir):
    from inference.services import model_version_register

    version, _ = model_version_register(path=fake_model_dir, activate=True)
    return version


@pytest.fixture
def staff(client):
    """A superuser, signed in on `client` (the admin site)."""
    user = User.objects.create_superuser("root", "root@example.org", "a-long-passphrase-42")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return user


def _events(action: str, **filters):
    return AuditEvent.objects.filter(action=action, **filters)


# --- audit rows for every action that matters -------------------------------------------------------------------------


@pytest.mark.django_db
def test_token_exchange_with_a_password_is_audited_as_a_sign_in(clinician):
    client = APIClient()
    for _ in range(2):  # the second exchange returns the existing token: still a sign-in with a password
        response = client.post(
            "/api/v1/auth/token/", {"username": clinician.username, "password": PASSWORD}, format="json"
        )
        assert response.status_code == 200
    events = _events(AuditAction.SIGN_IN, actor=clinician).order_by("id")
    assert [e.details for e in events] == [
        {"via": "api_token", "token_created": True},
        {"via": "api_token", "token_created": False},
    ]
    assert all(e.organization == clinician.organization and e.ip_address == "127.0.0.1" for e in events)
    wrong = client.post("/api/v1/auth/token/", {"username": clinician.username, "password": "nope-nope-1"})
    assert wrong.status_code == 400 and _events(AuditAction.SIGN_IN).count() == 2
    assert _events(AuditAction.SIGN_IN_FAILED).count() == 1


@pytest.mark.django_db
def test_sign_out_is_audited(clinician_client, clinician):
    assert clinician_client.post(reverse("account_logout")).status_code == 302
    assert _events(AuditAction.SIGN_OUT, actor=clinician).count() == 1


@pytest.mark.django_db
def test_case_view_upload_and_prediction_request_through_the_page_are_audited(
    clinician_client, clinician, case, active_model
):
    assert clinician_client.get(reverse("cases:detail", args=[case.pk])).status_code == 200
    assert _events(AuditAction.CASE_VIEW, actor=clinician, target_id=str(case.pk)).count() == 1
    edit = clinician_client.post(reverse("cases:edit", args=[case.pk]), {"title": "Fall, day 2", "notes": ""})
    assert edit.status_code == 302
    update = _events("case.update", actor=clinician, target_id=str(case.pk)).get()
    assert update.details == {"fields": ["title", "notes"]}
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(make_png(), name="s.png")}
    )
    assert response.status_code == 302
    scan = Scan.objects.get()
    prediction = Prediction.objects.get()
    upload = _events(AuditAction.SCAN_UPLOAD, actor=clinician, target_id=str(scan.pk)).get()
    assert upload.organization == case.organization and upload.ip_address == "127.0.0.1"
    assert _events(AuditAction.PREDICTION_REQUEST, actor=clinician, target_id=str(prediction.pk)).count() == 1
    # A retry of a failed prediction from the case page is a new request, audited as such.
    Prediction.objects.filter(pk=prediction.pk).update(status=PredictionStatus.FAILED)
    assert clinician_client.post(reverse("results:request", args=[scan.pk])).status_code == 302
    retry = _events(AuditAction.PREDICTION_REQUEST, actor=clinician).order_by("-id").first()
    assert retry.details["retry"] is True


@pytest.mark.django_db
def test_api_upload_rerun_and_file_download_are_audited(case, clinician, active_model):
    client = APIClient()
    client.force_authenticate(clinician)
    created = client.post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [ContentFile(make_png(), name="s.png")]}, format="multipart"
    ).json()
    assert _events(AuditAction.SCAN_UPLOAD, actor=clinician, target_id=created["id"]).count() == 1
    assert _events(AuditAction.PREDICTION_REQUEST, target_id=created["prediction"]["id"]).count() == 1
    Prediction.objects.update(status=PredictionStatus.FAILED)
    assert (
        client.post(f"/api/v1/predictions/{created['prediction']['id']}/rerun/", {}, format="json").status_code == 200
    )
    assert _events(AuditAction.PREDICTION_REQUEST, target_id=created["prediction"]["id"]).count() == 2
    slice_id = str(Scan.objects.get().slices.get().pk)
    assert client.get(f"/api/v1/scans/{created['id']}/slices/0/preview/").status_code == 200
    assert not _events(AuditAction.FILE_DOWNLOAD).exists()  # previews are for viewers, not audited
    download = client.get(f"/api/v1/scans/{created['id']}/slices/0/file/")
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    event = _events(AuditAction.FILE_DOWNLOAD, actor=clinician, target_id=slice_id).get()
    assert event.organization == case.organization and event.details["via"] == "api"


@pytest.mark.django_db
def test_admin_bulk_delete_is_audited(client, staff):
    doomed = [Organization.objects.create(name=f"Old {i}", slug=f"old-{i}") for i in range(3)]
    response = client.post(
        reverse("admin:accounts_organization_changelist"),
        {"action": "delete_selected", "_selected_action": [str(o.pk) for o in doomed], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Organization.objects.filter(pk__in=[o.pk for o in doomed]).exists()
    events = _events(AuditAction.ADMIN_CHANGE, actor=staff, details__change="delete")
    assert sorted(e.target_id for e in events) == sorted(str(o.pk) for o in doomed)
    assert {e.target_type for e in events} == {"accounts.organization"}
    # One object is logged by Django with save(): audited once by the signal, not twice.
    single = Organization.objects.create(name="Single", slug="single")
    client.post(
        reverse("admin:accounts_organization_changelist"),
        {"action": "delete_selected", "_selected_action": [str(single.pk)], "post": "yes"},
    )
    assert _events(AuditAction.ADMIN_CHANGE, target_id=str(single.pk)).count() == 1


@pytest.mark.django_db
def test_admin_changes_are_audited_in_the_organization_of_the_edited_record(
    client, staff, make_user, other_clinician, active_model
):
    from accounts.selectors import audit_event_list
    from scans.services import case_create, scan_ingest

    theirs = other_clinician.organization
    assert staff.organization != theirs
    staff_auditor = make_user(role="auditor", organization=staff.organization)
    their_auditor = make_user(role="auditor", organization=theirs)
    cases = [case_create(user=other_clinician, patient_ref=f"ELSE-{i:03d}") for i in range(4)]
    scan = scan_ingest(case=cases[0], user=other_clinician, files=[ContentFile(make_png(), name="s.png")])
    edited = client.post(
        reverse("admin:scans_case_change", args=[cases[0].pk]),
        {
            "organization": str(theirs.pk),
            "owner": str(other_clinician.pk),
            "patient_ref": cases[0].patient_ref,
            "title": "Renamed by staff",
            "notes": "",
            "scans-TOTAL_FORMS": "1",
            "scans-INITIAL_FORMS": "1",
            "scans-MIN_NUM_FORMS": "0",
            "scans-MAX_NUM_FORMS": "1000",
            "scans-0-id": str(scan.pk),
            "scans-0-case": str(cases[0].pk),
        },
    )
    assert edited.status_code == 302, edited.content.decode()[-2000:]
    # A scan (its organization is its case's) and a case deleted one by one, two cases in bulk.
    assert client.post(reverse("admin:scans_scan_delete", args=[scan.pk]), {"post": "yes"}).status_code == 302
    assert client.post(reverse("admin:scans_case_delete", args=[cases[1].pk]), {"post": "yes"}).status_code == 302
    bulk = client.post(
        reverse("admin:scans_case_changelist"),
        {"action": "delete_selected", "_selected_action": [str(c.pk) for c in cases[2:]], "post": "yes"},
    )
    assert bulk.status_code == 302
    changed = {str(scan.pk), *(str(c.pk) for c in cases)}
    events = _events(AuditAction.ADMIN_CHANGE, actor=staff)
    assert {e.target_id for e in events} == changed and {e.organization for e in events} == {theirs}
    assert {e.target_id for e in audit_event_list(user=their_auditor).filter(action=AuditAction.ADMIN_CHANGE)} == (
        changed
    )
    assert not audit_event_list(user=staff_auditor).filter(action=AuditAction.ADMIN_CHANGE).exists()


@pytest.mark.django_db
def test_admin_bulk_delete_confirmation_page_deletes_and_audits_nothing(client, staff):
    kept = [Organization.objects.create(name=f"Kept {i}", slug=f"kept-{i}") for i in range(2)]
    response = client.post(
        reverse("admin:accounts_organization_changelist"),
        {"action": "delete_selected", "_selected_action": [str(o.pk) for o in kept]},
    )
    assert response.status_code == 200 and b"Are you sure" in response.content
    assert Organization.objects.filter(pk__in=[o.pk for o in kept]).count() == 2
    assert not _events(AuditAction.ADMIN_CHANGE).exists()


# --- user text is escaped everywhere it is shown --------------------------------------------------------------------


@pytest.mark.django_db
def test_user_text_is_escaped_on_every_page(clinician, clinician_client, auditor_client, case, active_model):
    case_update(case=case, user=clinician, title=XSS, notes=XSS)
    clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": ContentFile(make_png(), name="s.png")})
    prediction = Prediction.objects.get()
    pages = [
        (clinician_client, reverse("cases:dashboard")),
        (clinician_client, reverse("cases:detail", args=[case.pk])),
        (clinician_client, reverse("cases:edit", args=[case.pk])),
        (clinician_client, reverse("results:detail", args=[prediction.pk])),
        (auditor_client, reverse("audit:events")),
        (auditor_client, reverse("audit:predictions")),
    ]
    for client, url in pages:
        html = client.get(url).content.decode()
        assert XSS not in html, url
    assert "&lt;script&gt;" in clinician_client.get(reverse("cases:detail", args=[case.pk])).content.decode()
    # A sign-in attempt with a hostile login name ends up in the audit trail, escaped.
    APIClient().post("/api/v1/auth/token/", {"username": XSS, "password": "x-wrong-1"}, format="json")
    assert XSS not in auditor_client.get(reverse("audit:events")).content.decode()


# --- redirects stay on the site -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example"]
)
def test_next_parameters_never_redirect_off_site(client, clinician, target):
    response = client.post(
        f"{reverse('account_login')}?next={target}", {"login": clinician.username, "password": PASSWORD}
    )
    assert response.status_code == 302 and "evil.example" not in response["Location"]
    response = client.post(
        reverse("account_login"), {"login": clinician.username, "password": PASSWORD, "next": target}
    )
    assert response.status_code == 302 and "evil.example" not in response["Location"]
    response = client.post(reverse("account_logout"), {"next": target})
    assert response.status_code == 302 and "evil.example" not in response["Location"]


@pytest.mark.django_db
def test_sign_in_redirect_keeps_a_local_next(client, clinician, case):
    target = reverse("cases:detail", args=[case.pk])
    response = client.get(target)
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    response = client.post(response["Location"], {"login": clinician.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == target


# --- clinical files only through permission-checked views -------------------------------------------------------------


@pytest.mark.django_db
def test_media_is_never_served_by_url(clinician_client, case, clinician, active_model):
    from django.urls import Resolver404, resolve

    clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": ContentFile(make_png(), name="s.png")})
    stored = Scan.objects.get().slices.get().file.name  # e.g. scans/ab/cd/<uuid>/0000-s.png
    for prefix in ("/media/", settings.MEDIA_URL, "/private/", "/static/", "/"):
        url = prefix + stored
        try:
            match = resolve(url)
        except Resolver404:
            continue
        assert match.url_name not in ("serve", "static"), url
        assert clinician_client.get(url).status_code == 404, url


@pytest.mark.django_db
def test_post_forms_need_the_csrf_token(clinician, case, active_model):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician, backend="django.contrib.auth.backends.ModelBackend")
    posts = [
        (reverse("cases:create"), {"patient_ref": "CSRF-0001"}),
        (reverse("cases:edit", args=[case.pk]), {"title": "changed"}),
        (reverse("cases:upload", args=[case.pk]), {"files": ContentFile(make_png(), name="s.png")}),
        (reverse("account-api-token"), {"action": "create"}),
        (reverse("account_logout"), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert not Scan.objects.exists()
    case.refresh_from_db()
    assert case.title != "changed"


@pytest.mark.django_db
def test_a_missing_file_is_a_404_and_no_audited_download(clinician_client, case, active_model):
    clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": ContentFile(make_png(), name="s.png")})
    scan = Scan.objects.get()
    slice_ = scan.slices.get()
    slice_.file.storage.delete(slice_.file.name)  # lost on disk (restore from backup pending)
    assert clinician_client.get(reverse("scans:slice-file", args=[slice_.pk])).status_code == 404
    assert clinician_client.get(f"/api/v1/scans/{scan.pk}/slices/0/file/").status_code == 404
    assert not _events(AuditAction.FILE_DOWNLOAD).exists()


@pytest.mark.django_db
def test_private_pages_and_every_api_answer_are_never_stored(clinician, clinician_client, client, case, active_model):
    """A result page must not come back from the browser's cache (Back after signing out of a shared workstation)."""
    for url in (reverse("cases:dashboard"), reverse("cases:detail", args=[case.pk]), reverse("account_email")):
        cache_control = clinician_client.get(url)["Cache-Control"]
        assert "no-store" in cache_control and "private" in cache_control, url
    api = APIClient()
    api.force_authenticate(clinician)
    assert "no-store" in api.get("/api/v1/cases/")["Cache-Control"]
    assert "no-store" in APIClient().get("/api/v1/cases/")["Cache-Control"]  # a 401 too
    assert "no-store" not in client.get(reverse("home")).get("Cache-Control", "")  # the public page may be cached


@pytest.mark.django_db
def test_reading_a_result_is_audited_on_the_page_and_through_the_api(
    clinician, auditor, auditor_client, case, active_model
):
    api = APIClient()
    api.force_authenticate(clinician)
    created = api.post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [ContentFile(make_png(), name="s.png")]}, format="multipart"
    ).json()
    prediction_id = created["prediction"]["id"]
    assert api.get(f"/api/v1/predictions/{prediction_id}/").status_code == 200
    assert auditor_client.get(reverse("results:detail", args=[prediction_id])).status_code == 200
    assert not _events(AuditAction.PREDICTION_VIEW).exists()  # a queued prediction shows no result yet
    Prediction.objects.filter(pk=prediction_id).update(status=PredictionStatus.SUCCEEDED, probability=0.8)
    assert api.get(f"/api/v1/predictions/{prediction_id}/").status_code == 200
    by_api = _events(AuditAction.PREDICTION_VIEW, actor=clinician, target_id=prediction_id).get()
    assert by_api.organization == case.organization and by_api.details == {"case": str(case.pk), "status": "succeeded"}
    assert auditor_client.get(reverse("results:detail", args=[prediction_id])).status_code == 200
    assert _events(AuditAction.PREDICTION_VIEW, actor=auditor, target_id=prediction_id).count() == 1


def test_the_default_cache_keeps_lockout_counters_under_load(tmp_path):
    """Django's file cache culls a random third of its entries past 300 by default: lockout counters would vanish."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import django; django.setup(); from django.core.cache import cache; "
        "cache.set('login_failed:victim', 5, 300); [cache.set(f'k{i}', i, 300) for i in range(1500)]; "
        "print(cache.get('login_failed:victim'))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hemoplatform.settings.local", "HEMO_VAR_DIR": str(tmp_path)}
    env.pop("CACHE_URL", None)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"
