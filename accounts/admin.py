from django.contrib import admin
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import transaction
from django.utils.translation import gettext_lazy

from accounts.models import AuditAction, AuditEvent, Organization, User
from accounts.services import admin_change_organization, record_audit_event


@admin.action(permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s"))
def delete_selected(modeladmin, request, queryset):
    """Django's bulk delete action, audited. Django logs a deletion of several objects with
    ``LogEntry.objects.bulk_create``, which sends no ``post_save``, so ``accounts.signals.audit_admin_change`` never
    hears of it (a single object is logged with ``save()`` and is audited there). Replaces the site-wide action."""
    with transaction.atomic():
        doomed = list(queryset) if request.POST.get("post") else []
        # Looked up before the deletion removes what leads from an object to its organization.
        organizations = [admin_change_organization(record=obj, deletion=True) for obj in doomed]
        response = django_delete_selected(modeladmin, request, queryset)
        if response is None and len(doomed) > 1:  # deleted (a confirmation or refusal page is a response)
            target_type = f"{modeladmin.opts.app_label}.{modeladmin.opts.model_name}"
            for obj, organization in zip(doomed, organizations, strict=True):
                record_audit_event(
                    action=AuditAction.ADMIN_CHANGE,
                    actor=request.user,
                    organization=organization,
                    target_type=target_type,
                    target_id=str(obj.pk),
                    request=request,
                    details={"change": "delete", "object": str(obj)[:200], "message": "bulk delete"},
                )
    return response


admin.site.add_action(delete_selected, "delete_selected")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "organization", "role", "is_active", "is_staff")
    list_filter = ("role", "organization", "is_active", "is_staff")
    fieldsets = (*DjangoUserAdmin.fieldsets, ("HemoPlatform", {"fields": ("organization", "role")}))
    add_fieldsets = (
        (
            None,
            {"classes": ("wide",), "fields": ("username", "email", "organization", "role", "password1", "password2")},
        ),
    )


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is append-only, even for superusers."""

    list_display = ("created", "actor_username", "organization", "action", "target_type", "target_id", "ip_address")
    list_filter = ("action", "organization")
    search_fields = ("actor_username", "target_id", "action")
    date_hierarchy = "created"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
