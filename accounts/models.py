from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.utils.text import slugify


class Organization(models.Model):
    """A hospital or team. Every clinical record belongs to exactly one; data never crosses organizations."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def unique_slug(cls, name: str) -> str:
        base = slugify(name)[:60] or "organization"
        slug, n = base, 1
        while cls.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
        return slug


class Role(models.TextChoices):
    CLINICIAN = "clinician", "Clinician"
    AUDITOR = "auditor", "Auditor"
    ADMIN = "admin", "Administrator"


class UserManager(DjangoUserManager):
    def create_superuser(self, username, email=None, password=None, **extra_fields):
        # `createsuperuser --noinput` must give a usable account: an admin of an organization (created on first use)
        # whose email counts as verified, since allauth requires verified email to sign in.
        if extra_fields.get("organization") is None and extra_fields.get("organization_id") is None:
            name = settings.HEMO_DEFAULT_ORGANIZATION_NAME
            organization = Organization.objects.filter(slug=slugify(name)).first()
            if organization is None:
                organization = Organization.objects.create(name=name, slug=Organization.unique_slug(name))
            extra_fields["organization"] = organization
        extra_fields.setdefault("role", Role.ADMIN)
        user = super().create_superuser(username, email, password, **extra_fields)
        if user.email:
            from allauth.account.models import EmailAddress

            EmailAddress.objects.update_or_create(
                user=user, email=user.email, defaults={"verified": True, "primary": True}
            )
        return user


class User(AbstractUser):
    """A person using the platform. ``role`` and ``organization`` decide what they may see (accounts.permissions)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField("email address", unique=True, blank=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, null=True, blank=True, related_name="members"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CLINICIAN)

    objects = UserManager()

    REQUIRED_FIELDS = ["email"]

    def __str__(self) -> str:
        return self.username


class AuditAction(models.TextChoices):
    SIGN_IN = "auth.sign_in", "Signed in"
    SIGN_IN_FAILED = "auth.sign_in_failed", "Sign-in failed"
    SIGN_OUT = "auth.sign_out", "Signed out"
    SIGN_UP = "auth.sign_up", "Signed up"
    ORGANIZATION_CREATE = "organization.create", "Organization created"
    CASE_CREATE = "case.create", "Case created"
    CASE_VIEW = "case.view", "Case viewed"
    CASE_UPDATE = "case.update", "Case updated"
    SCAN_UPLOAD = "scan.upload", "Scan uploaded"
    FILE_DOWNLOAD = "file.download", "File downloaded"
    PREDICTION_REQUEST = "prediction.request", "Prediction requested"
    PREDICTION_START = "prediction.start", "Prediction started"
    PREDICTION_SUCCEED = "prediction.succeed", "Prediction succeeded"
    PREDICTION_FAIL = "prediction.fail", "Prediction failed"
    PREDICTION_RELEASE = "prediction.release", "Prediction back in the queue"
    PREDICTION_VIEW = "prediction.view", "Result viewed"
    MODEL_REGISTER = "model.register", "Model registered"
    MODEL_ACTIVATE = "model.activate", "Model activated"
    EXPORT = "data.export", "Data exported"
    ADMIN_CHANGE = "admin.change", "Admin change"
    MEMBER_ADD = "member.add", "Member added"
    MEMBER_CHANGE = "member.change", "Member changed"
    MEMBER_INVITE = "member.invite", "Link to set a password sent"
    TOKEN_CREATE = "auth.token_create", "API token created"
    TOKEN_ROTATE = "auth.token_rotate", "API token replaced"
    TOKEN_REVOKE = "auth.token_revoke", "API token revoked"


class AuditEventQuerySet(models.QuerySet):
    # Append-only: bulk changes are refused as well as per-row ones.
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One row per action that matters; never updated or deleted. Written by ``accounts.services.record_audit_event``
    inside the same transaction as the action it records."""

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text too, so the trail still names the person after the account is removed.
    actor_username = models.CharField(max_length=150, blank=True)
    organization = models.ForeignKey(Organization, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True, db_index=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["organization", "-created"])]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")
