from django.contrib import admin
from django.urls import include, path

from accounts.pages import home
from hemoplatform.views import health

admin.site.site_header = "HemoPlatform administration"
handler400 = "hemoplatform.views.bad_request"

urlpatterns = [
    path("", home, name="home"),
    path("health", health, name="health"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.api.account_urls")),  # /account/api-token/ (the API token page)
    path("api/", include("hemoplatform.api_urls", namespace="api")),
    path("files/", include("scans.urls")),
    path("files/", include("inference.urls")),
    # Server-rendered pages (scans.pages, inference.pages, accounts.pages).
    path("cases/", include("scans.page_urls")),
    path("audit/", include("accounts.page_urls")),
    path("", include("inference.page_urls")),
]
