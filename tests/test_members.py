"""The organization admin's members page (/account/members/): adding a colleague who sets their own password from
an emailed link, role changes, deactivation, and who may do any of it. Real database, real allauth flows."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import Client
from django.urls import reverse

from accounts.models import AuditAction, AuditEvent, Role, User

MEMBERS = "/account/members/"
NEW_PASSWORD = "a-long-new-passphrase-77"


def _set_password_from_mail(message) -> None:
    link = re.search(r"https?://\S+", message.body).group(0)
    visitor = Client()
    form_page = visitor.get(link, follow=True)
    assert b'name="password1"' in form_page.content, "the link opens the form to set a password"
    visitor.post(form_page.redirect_chain[-1][0], {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})


def _add(client, django_capture_on_commit_callbacks, **fields):
    data = {"action": "add", "username": "bob", "email": "bob@example.org", "role": Role.CLINICIAN, **fields}
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(MEMBERS, data)


def test_admin_adds_a_colleague_who_sets_a_password_from_the_link_and_signs_in(
    org_admin, org_admin_client, django_capture_on_commit_callbacks
):
    response = _add(org_admin_client, django_capture_on_commit_callbacks)
    assert response.status_code == 302 and response["Location"] == MEMBERS
    bob = User.objects.get(username="bob")
    assert bob.organization_id == org_admin.organization_id and bob.role == Role.CLINICIAN
    assert not bob.has_usable_password(), "no password until bob sets one"
    assert not EmailAddress.objects.get(user=bob).verified, "verified by using the link, not by the admin's word"
    event = AuditEvent.objects.get(action=AuditAction.MEMBER_ADD)
    assert event.actor == org_admin and event.target_id == str(bob.pk) and event.details["role"] == "clinician"
    assert AuditEvent.objects.get(action=AuditAction.MEMBER_INVITE).details["email"] == "bob@example.org"
    page = org_admin_client.get(MEMBERS)
    assert 'data-testid="member-bob"' in page.content.decode() and "invited: no password yet" in page.content.decode()

    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["bob@example.org"]
    assert str(org_admin.organization) in mail.outbox[0].subject
    link = re.search(r"https?://\S+", mail.outbox[0].body).group(0)
    visitor = Client()
    form_page = visitor.get(link, follow=True)
    assert form_page.status_code == 200 and b'name="password1"' in form_page.content
    done = visitor.post(
        form_page.redirect_chain[-1][0] if form_page.redirect_chain else link,
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert done.status_code == 302
    bob.refresh_from_db()
    assert bob.check_password(NEW_PASSWORD)
    assert [(a.email, a.verified) for a in EmailAddress.objects.filter(user=bob)] == [("bob@example.org", True)]
    # Signs in at once (no confirmation email to wait for) and sees the organization's cases.
    signed_in = Client()
    login = signed_in.post(reverse("account_login"), {"login": "bob", "password": NEW_PASSWORD})
    assert login.status_code == 302 and "_auth_user_id" in signed_in.session
    assert signed_in.get(reverse("cases:dashboard")).status_code == 200
    # The link worked once.
    assert b'name="password1"' not in Client().get(link, follow=True).content


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"username": "taken"}, "The username &#x27;taken&#x27; is taken."),
        ({"email": "taken@example.org"}, "An account with the email address taken@example.org exists already."),
        ({"email": "not-an-address"}, "Enter a valid email address."),
        ({"role": "superuser"}, "Select a valid choice."),
        ({"username": "bad name!"}, "Enter a valid username."),
    ],
)
def test_a_refused_addition_says_why_and_creates_nothing(
    org_admin_client, make_user, organization, django_capture_on_commit_callbacks, fields, words
):
    make_user(username="taken", organization=organization)
    before = User.objects.count()
    response = _add(org_admin_client, django_capture_on_commit_callbacks, **fields)
    assert response.status_code == 400 and words in response.content.decode()
    assert User.objects.count() == before and not mail.outbox
    assert not AuditEvent.objects.filter(action=AuditAction.MEMBER_ADD).exists()


def test_admin_changes_a_role_and_deactivates_a_member_whose_token_then_stops(
    org_admin, org_admin_client, clinician, make_user
):
    from rest_framework.authtoken.models import Token

    response = org_admin_client.post(MEMBERS, {"action": "role", "member": clinician.pk, "role": Role.AUDITOR})
    assert response.status_code == 302
    clinician.refresh_from_db()
    assert clinician.role == Role.AUDITOR
    change = AuditEvent.objects.get(action=AuditAction.MEMBER_CHANGE)
    assert change.details["changes"] == {"role": ["clinician", "auditor"]} and change.actor == org_admin

    key = Token.objects.create(user=clinician).key
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/me/").status_code == 200
    assert org_admin_client.post(MEMBERS, {"action": "deactivate", "member": clinician.pk}).status_code == 302
    clinician.refresh_from_db()
    assert not clinician.is_active
    assert api.get("/api/v1/me/").status_code == 401
    assert not Client().login(username=clinician.username, password="correct-horse-battery-9")
    assert "deactivated" in org_admin_client.get(MEMBERS).content.decode()
    org_admin_client.post(MEMBERS, {"action": "activate", "member": clinician.pk})
    clinician.refresh_from_db()
    assert clinician.is_active and AuditEvent.objects.filter(action=AuditAction.MEMBER_CHANGE).count() == 3


def test_an_admin_cannot_demote_or_deactivate_themselves(org_admin, org_admin_client):
    for data in ({"action": "role", "role": Role.CLINICIAN}, {"action": "deactivate"}):
        response = org_admin_client.post(MEMBERS, {**data, "member": org_admin.pk}, follow=True)
        assert "You cannot change your own role or deactivate yourself" in response.content.decode()
    org_admin.refresh_from_db()
    assert org_admin.role == Role.ADMIN and org_admin.is_active
    assert not AuditEvent.objects.filter(action=AuditAction.MEMBER_CHANGE).exists()


def test_a_new_link_goes_only_to_a_member_without_a_password(
    org_admin_client, clinician, django_capture_on_commit_callbacks
):
    _add(org_admin_client, django_capture_on_commit_callbacks)
    bob = User.objects.get(username="bob")
    mail.outbox.clear()
    org_admin_client.post(MEMBERS, {"action": "resend", "member": bob.pk})
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["bob@example.org"]
    assert AuditEvent.objects.filter(action=AuditAction.MEMBER_INVITE, target_id=str(bob.pk)).count() == 2
    refused = org_admin_client.post(MEMBERS, {"action": "resend", "member": clinician.pk}, follow=True)
    assert "has set a password already" in refused.content.decode() and len(mail.outbox) == 1


def test_only_an_organization_admin_may_manage_and_only_their_own_members(
    clinician_client, auditor_client, org_admin, other_clinician, make_user, other_organization
):
    for client in (clinician_client, auditor_client):
        assert client.get(MEMBERS).status_code == 403
        assert client.post(MEMBERS, {"action": "role", "member": org_admin.pk, "role": "clinician"}).status_code == 403
        assert "/account/members/" not in client.get(reverse("cases:dashboard")).content.decode()
    anonymous = Client().get(MEMBERS)
    assert anonymous.status_code == 302 and reverse("account_login") in anonymous["Location"]
    # Another organization's admin: our members are not theirs to see or change (404, as if missing).
    other_admin = make_user(role=Role.ADMIN, organization=other_organization)
    client = Client()
    client.force_login(other_admin, backend="django.contrib.auth.backends.ModelBackend")
    assert org_admin.username not in client.get(MEMBERS).content.decode()
    response = client.post(MEMBERS, {"action": "deactivate", "member": other_clinician.pk})
    assert response.status_code == 302, "their own organization's member"
    assert client.post(MEMBERS, {"action": "deactivate", "member": org_admin.pk}).status_code == 404
    org_admin.refresh_from_db()
    assert org_admin.is_active


def test_members_link_is_in_the_navigation_of_admins(org_admin_client):
    assert 'href="/account/members/"' in org_admin_client.get(reverse("cases:dashboard")).content.decode()


def test_a_mixed_case_address_is_kept_in_lower_case_and_signs_in_by_email_without_confirmation(
    org_admin_client, django_capture_on_commit_callbacks
):
    _add(org_admin_client, django_capture_on_commit_callbacks, email="Bob@Example.ORG")
    bob = User.objects.get(username="bob")
    assert bob.email == "bob@example.org"
    _set_password_from_mail(mail.outbox[0])
    assert list(EmailAddress.objects.filter(user=bob).values_list("email", "verified")) == [("bob@example.org", True)]
    client = Client()
    response = client.post(reverse("account_login"), {"login": "Bob@Example.ORG", "password": NEW_PASSWORD})
    assert response.status_code == 302 and "confirm-email" not in response["Location"]
    assert "_auth_user_id" in client.session


def test_a_link_sent_before_deactivation_no_longer_works(org_admin_client, django_capture_on_commit_callbacks):
    _add(org_admin_client, django_capture_on_commit_callbacks)
    bob = User.objects.get(username="bob")
    org_admin_client.post(MEMBERS, {"action": "deactivate", "member": bob.pk})
    link = re.search(r"https?://\S+", mail.outbox[0].body).group(0)
    assert b'name="password1"' not in Client().get(link, follow=True).content
    # Nor after a reactivation: the admin sends a new link then.
    org_admin_client.post(MEMBERS, {"action": "activate", "member": bob.pk})
    assert b'name="password1"' not in Client().get(link, follow=True).content
    bob.refresh_from_db()
    assert bob.is_active and not bob.has_usable_password()


def test_platform_staff_in_the_organization_are_not_the_admin_s_to_change(org_admin_client, make_user, organization):
    staff = make_user(role=Role.ADMIN, organization=organization, is_staff=True)
    response = org_admin_client.post(MEMBERS, {"action": "deactivate", "member": staff.pk}, follow=True)
    assert "is platform staff" in response.content.decode()
    org_admin_client.post(MEMBERS, {"action": "role", "member": staff.pk, "role": Role.CLINICIAN})
    staff.refresh_from_db()
    assert staff.is_active and staff.role == Role.ADMIN


def test_an_admin_demoted_meanwhile_can_no_longer_change_anyone(org_admin, make_user, organization):
    """Two admins demoting each other at the same moment: the second change is made by someone who is no longer an
    admin (their user object in memory is stale) and is refused, so the organization keeps an admin."""
    from django.core.exceptions import PermissionDenied

    from accounts.services import member_update

    second = make_user(role=Role.ADMIN, organization=organization)
    stale_second = User.objects.get(pk=second.pk)
    member_update(actor=org_admin, member_id=second.pk, role=Role.CLINICIAN)
    with pytest.raises(PermissionDenied):
        member_update(actor=stale_second, member_id=org_admin.pk, role=Role.CLINICIAN)
    org_admin.refresh_from_db()
    assert org_admin.role == Role.ADMIN


@pytest.mark.parametrize("member", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_a_member_id_that_names_no_member_is_a_404(org_admin_client, member):
    for action in ("role", "deactivate", "resend"):
        assert (
            org_admin_client.post(MEMBERS, {"action": action, "member": member, "role": "auditor"}).status_code == 404
        )


class _DownMailBackend:
    """A mail server that refuses connections (settings.EMAIL_BACKEND for one test)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("mail server unreachable")


def test_a_mail_server_that_is_down_leaves_the_member_added_and_says_so(
    org_admin_client, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = f"{__name__}._DownMailBackend"
    response = _add(org_admin_client, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    assert User.objects.filter(username="bob").exists()
    page = org_admin_client.get(MEMBERS).content.decode()
    assert "bob was added, but the email to bob@example.org could not be sent (mail server unreachable)" in page
    bob = User.objects.get(username="bob")
    again = org_admin_client.post(MEMBERS, {"action": "resend", "member": bob.pk}, follow=True)
    assert "The email could not be sent (mail server unreachable)" in again.content.decode()
    assert not AuditEvent.objects.filter(action=AuditAction.MEMBER_INVITE).exists(), "no link was issued"
