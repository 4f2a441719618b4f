from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import AuditEvent, Organization, User


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
