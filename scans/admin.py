from django.contrib import admin

from scans.models import Case, Scan, Slice


class ScanInline(admin.TabularInline):
    model = Scan
    extra = 0
    fields = ("kind", "modality", "slice_count", "status", "uploaded_by", "created")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("patient_ref", "title", "organization", "owner", "created")
    list_filter = ("organization",)
    search_fields = ("patient_ref", "title")
    readonly_fields = ("id", "created", "modified")
    inlines = [ScanInline]


class SliceInline(admin.TabularInline):
    model = Slice
    extra = 0
    fields = ("index", "original_filename", "content_type", "instance_number", "slice_position", "sha256")
    readonly_fields = fields
    can_delete = False


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
    """Scans come only from ingestion (scans.services.scan_ingest); the admin can look and delete, not add."""

    list_display = ("id", "case", "kind", "modality", "slice_count", "status", "created")
    list_filter = ("kind", "modality", "status")
    readonly_fields = (
        "id",
        "case",
        "kind",
        "modality",
        "slice_count",
        "sha256",
        "status",
        "uploaded_by",
        "original_filenames",
        "details",
        "created",
        "modified",
    )
    inlines = [SliceInline]

    def has_add_permission(self, request):
        return False


@admin.register(Slice)
class SliceAdmin(admin.ModelAdmin):
    list_display = ("scan", "index", "original_filename", "content_type")
    readonly_fields = [f.name for f in Slice._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
