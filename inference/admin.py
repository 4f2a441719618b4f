from django.contrib import admin, messages

from inference.models import HeatMap, ModelVersion, Prediction
from inference.services import model_version_activate


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Versions come from `manage.py register_model`; the admin shows them and switches the active one."""

    list_display = ("name", "version", "short_sha", "threshold", "is_active", "created")
    readonly_fields = (
        "id",
        "name",
        "version",
        "sha256",
        "threshold",
        "metrics",
        "card",
        "path",
        "is_active",
        "created",
    )
    actions = ["activate"]

    @admin.display(description="sha256")
    def short_sha(self, obj):
        return obj.sha256[:12]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Make the selected version the active one")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        model_version_activate(model_version=queryset.get(), actor=request.user)
        self.message_user(request, "Activated.")


class HeatMapInline(admin.TabularInline):
    model = HeatMap
    extra = 0
    fields = ("index", "probability", "image")
    readonly_fields = fields
    can_delete = False


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("id", "scan", "model_version", "status", "probability", "label", "created", "finished")
    list_filter = ("status", "model_version")
    readonly_fields = [f.name for f in Prediction._meta.fields]
    inlines = [HeatMapInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
