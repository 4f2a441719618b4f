from django.urls import path

from scans import views

app_name = "scans"

urlpatterns = [
    path("slices/<uuid:slice_id>/file/", views.slice_file, name="slice-file"),
    path("slices/<uuid:slice_id>/thumbnail/", views.slice_thumbnail, name="slice-thumbnail"),
    path("slices/<uuid:slice_id>/preview/", views.slice_preview, name="slice-preview"),
    path("scans/<uuid:scan_id>/thumbnail/", views.scan_thumbnail, name="scan-thumbnail"),
]
