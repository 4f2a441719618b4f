from django.urls import path

from scans import pages

app_name = "cases"

urlpatterns = [
    path("", pages.dashboard, name="dashboard"),
    path("new/", pages.case_new, name="create"),
    path("<uuid:case_id>/", pages.case_detail, name="detail"),
    path("<uuid:case_id>/edit/", pages.case_edit, name="edit"),
    path("<uuid:case_id>/upload/", pages.case_upload, name="upload"),
    path("<uuid:case_id>/status.json", pages.case_status, name="status"),
]
