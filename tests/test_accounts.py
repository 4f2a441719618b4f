"""Accounts: sign-up policy, superuser creation, audit trail, permissions and the file views' access rules."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.urls import reverse

from accounts.models import AuditAction, AuditEvent, Organization, Role, User
from accounts.selectors import audit_event_list
from scans.selectors import case_get_visible, case_list_visible, slice_list_visible
from scans.services import case_create, case_record_view, scan_ingest


def test_signup_founds_an_organization_as_clinician_and_requires_email_verification(client, db):
    response = client.post(
        reverse("account_signup"),
        {
            "email": "new@example.org",
            "username": "newdoc",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
            "organization_name": "General Hospital",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(username="newdoc")
    assert user.role == Role.CLINICIAN, "admins are appointed by platform staff, never by signing up"
    assert user.organization.name == "General Hospital"
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1 and "new@example.org" in mail.outbox[0].to
    # Mandatory verification: no session yet.
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_UP, actor=user).exists()


def test_signup_with_an_existing_name_does_not_join_that_organization(client, organization):
    client.post(
        reverse("account_signup"),
        {
            "email": "x@example.org",
            "username": "intruder",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
            "organization_name": organization.name,
        },
    )
    intruder = User.objects.get(username="intruder")
    assert intruder.organization != organization


def test_sign_in_with_email_is_audited(client, clinician):
    from tests.conftest import PASSWORD

    response = client.post(reverse("account_login"), {"login": clinician.email, "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(clinician.pk)
    event = AuditEvent.objects.get(action=AuditAction.SIGN_IN)
    assert event.actor == clinician and event.organization == clinician.organization
    assert event.ip_address == "127.0.0.1"


def test_createsuperuser_noinput_makes_an_admin_with_an_organization(db, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "root@example.org")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-passphrase-42")
    call_command("createsuperuser", "--noinput", verbosity=0)
    user = User.objects.get(username="root")
    assert user.is_superuser and user.role == Role.ADMIN
    assert isinstance(user.organization, Organization)
    assert EmailAddress.objects.get(user=user).verified


def test_admin_changes_are_audited(db, monkeypatch, client):
    user = User.objects.create_superuser("root", "root@example.org", "a-long-passphrase-42")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(reverse("admin:accounts_organization_add"), {"name": "New Org", "slug": "new-org"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action=AuditAction.ADMIN_CHANGE)
    assert event.actor == user and event.target_type == "accounts.organization"
    assert event.details["change"] == "add"


def test_audit_events_are_append_only(clinician):
    event = AuditEvent.objects.filter(actor=clinician).first() or AuditEvent.objects.create(action="test")
    event.action = "changed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().update(action="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()


def test_patient_ref_must_be_a_code_not_a_name(clinician):
    for bad in ["John Smith", "Smith", "ab", "x" * 40, "HOSP 123"]:
        with pytest.raises(ValidationError):
            case_create(user=clinician, patient_ref=bad)
    assert case_create(user=clinician, patient_ref="ct_ich-049").patient_ref == "ct_ich-049"


def test_case_creation_is_audited_and_denied_to_auditors(clinician, auditor):
    case = case_create(user=clinician, patient_ref="HOSP-1")
    assert AuditEvent.objects.filter(action=AuditAction.CASE_CREATE, target_id=str(case.pk)).exists()
    with pytest.raises(PermissionDenied):
        case_create(user=auditor, patient_ref="HOSP-2")


def test_visibility_by_role_and_organization(case, clinician, auditor, org_admin, other_clinician, make_user):
    from django.http import Http404

    for user in (clinician, auditor, org_admin):
        assert list(case_list_visible(user=user)) == [case]
        assert case_get_visible(user=user, case_id=case.pk) == case
    assert not case_list_visible(user=other_clinician).exists()
    with pytest.raises(Http404):
        case_get_visible(user=other_clinician, case_id=case.pk)
    with pytest.raises(Http404):
        case_get_visible(user=clinician, case_id="not-a-uuid")
    orphan = make_user(role="clinician", organization=None)
    assert not case_list_visible(user=orphan).exists()
    inactive = make_user(role="admin", organization=case.organization, is_active=False)
    assert not case_list_visible(user=inactive).exists()


def test_case_view_is_audited(case, auditor, other_clinician):
    case_record_view(case=case, user=auditor)
    assert AuditEvent.objects.filter(action=AuditAction.CASE_VIEW, actor=auditor, target_id=str(case.pk)).exists()
    with pytest.raises(PermissionDenied):
        case_record_view(case=case, user=other_clinician)


def test_audit_trail_visible_to_auditors_of_the_organization_only(case, clinician, auditor, other_clinician):
    assert audit_event_list(user=auditor).filter(action=AuditAction.CASE_CREATE).exists()
    assert not audit_event_list(user=clinician).exists()
    assert not audit_event_list(user=other_clinician).exists()


def test_file_views_check_permission_and_audit_downloads(
    case, clinician, head_ct_png, upload, clinician_client, auditor_client, other_clinician_client, client
):
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    slice_ = scan.slices.get()
    url = reverse("scans:slice-file", args=[slice_.pk])
    response = clinician_client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == head_ct_png.read_bytes()
    assert "attachment" in response["Content-Disposition"]
    assert AuditEvent.objects.filter(action=AuditAction.FILE_DOWNLOAD, target_id=str(slice_.pk)).count() == 1
    assert auditor_client.get(url).status_code == 200  # read-only oversight includes files
    assert other_clinician_client.get(url).status_code == 404
    assert client.get(url).status_code == 302  # anonymous: to sign-in
    for name in ("scans:slice-thumbnail", "scans:slice-preview"):
        assert clinician_client.get(reverse(name, args=[slice_.pk]))["Content-Type"] == "image/png"
        assert other_clinician_client.get(reverse(name, args=[slice_.pk])).status_code == 404
    assert clinician_client.get(reverse("scans:scan-thumbnail", args=[scan.pk])).status_code == 200
    assert other_clinician_client.get(reverse("scans:scan-thumbnail", args=[scan.pk])).status_code == 404
    assert AuditEvent.objects.filter(action=AuditAction.FILE_DOWNLOAD).count() == 2
    assert not slice_list_visible(user=User.objects.get(pk=other_clinician_client.session["_auth_user_id"])).exists()


def test_allauth_pages_render(client, db):
    for name in ("account_login", "account_signup", "account_reset_password"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
    assert b"organization_name" in client.get(reverse("account_signup")).content


def test_failed_sign_in_is_audited_without_the_password(client, clinician, org_admin):
    client.post(reverse("account_login"), {"login": clinician.username, "password": "wrong-password-123"})
    event = AuditEvent.objects.get(action=AuditAction.SIGN_IN_FAILED)
    assert event.actor is None and event.ip_address == "127.0.0.1"
    assert "wrong-password-123" not in str(event.details)
    # Guessing at a member's password is the business of that member's organization: it shows in their trail.
    assert event.organization == clinician.organization and event.target_id == str(clinician.pk)
    assert event in audit_event_list(user=org_admin)
    client.post(reverse("account_login"), {"login": clinician.email.upper(), "password": "wrong-password-123"})
    assert AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED, target_id=str(clinician.pk)).count() == 2
    client.post(reverse("account_login"), {"login": "nobody-here", "password": "wrong-password-123"})
    unknown = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED).order_by("-id").first()
    assert unknown.organization is None and unknown.target_id == "" and unknown not in audit_event_list(user=org_admin)
