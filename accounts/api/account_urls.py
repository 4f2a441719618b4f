"""Mounted at /account/ by hemoplatform/urls.py."""

from django.urls import path

from accounts.api.account_views import api_token_page

urlpatterns = [
    path("api-token/", api_token_page, name="account-api-token"),
]
