from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("predictions/<uuid:prediction_id>/heatmaps/<int:index>/", views.heatmap_image, name="heatmap"),
]
