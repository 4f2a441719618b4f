from django.urls import path

from accounts import pages
from inference import pages as inference_pages

app_name = "audit"

urlpatterns = [
    path("events/", pages.audit_events, name="events"),
    path("predictions/", inference_pages.audit_predictions, name="predictions"),
]
