"""Mounted at /account/ by hemoplatform/urls.py: the API token page and the organization's members page."""

from django.urls import path

from accounts.api.account_views import api_token_page
from accounts.pages import members

urlpatterns = [
    path("api-token/", api_token_page, name="account-api-token"),
    path("members/", members, name="account-members"),
]
