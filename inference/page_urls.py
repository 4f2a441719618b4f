from django.urls import path

from inference import pages

app_name = "results"

urlpatterns = [
    path("predictions/<uuid:prediction_id>/", pages.prediction_detail, name="detail"),
    path("predictions/<uuid:prediction_id>/status.json", pages.prediction_status, name="status"),
    path("scans/<uuid:scan_id>/predict/", pages.scan_predict, name="request"),
    path("models/", pages.model_active, name="model-active"),
    path("models/<uuid:model_id>/", pages.model_detail, name="model"),
    path("models/<uuid:model_id>/<slug:name>.png", pages.model_artifact, name="model-artifact"),
]
