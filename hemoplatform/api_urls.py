"""The API: one router under /api/v1/, the OpenAPI schema at /api/schema/ and its docs page at /api/docs/.

Mounted at /api/ by hemoplatform/urls.py with the namespace ``api``.
"""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.routers import DefaultRouter

from accounts.api.views import MeTokenView, MeView, TokenView
from hemoplatform.api_docs import ApiDocsView
from hemoplatform.api_errors import api_not_found
from inference.api.views import ModelVersionViewSet, PredictionViewSet
from scans.api.views import CaseViewSet, ScanViewSet

app_name = "api"


class Router(DefaultRouter):
    include_root_view = False
    include_format_suffixes = False


router = Router()
router.register("cases", CaseViewSet, basename="case")
router.register("scans", ScanViewSet, basename="scan")
router.register("predictions", PredictionViewSet, basename="prediction")
router.register("models", ModelVersionViewSet, basename="modelversion")

v1 = [
    path("auth/token/", TokenView.as_view(), name="auth-token"),
    path("me/", MeView.as_view(), name="me"),
    path("me/token/", MeTokenView.as_view(), name="me-token"),
    path("", include(router.urls)),
]

urlpatterns = [
    path("v1/", include(v1)),
    # The schema and its page are public: they describe the API, not anyone's data.
    path(
        "schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]), name="schema"
    ),
    path("docs/", ApiDocsView.as_view(), name="docs"),
    re_path(r"^.*$", api_not_found),
]
