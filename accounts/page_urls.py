from django.urls import path

from accounts import pages
from inference import pages as inference_pages

app_name = "audit"

urlpatterns = [
    path("events/", pages.audit_events, name="events"),
    path("events/export.csv", pages.audit_events_export, name="events-export"),
    path("predictions/", inference_pages.audit_predictions, name="predictions"),
    path("predictions/export.csv", inference_pages.audit_predictions_export, name="predictions-export"),
]
