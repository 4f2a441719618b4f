"""Fixtures for the API tests (the shared ones — users per role and organization, data paths, the real worker —
come from tests/conftest.py).

    api_client               an anonymous rest_framework APIClient
    token_for(user) -> key   the user's API token (created through the service, as POST /auth/token/ would)
    client_for(user)         an APIClient sending `Authorization: Token <key>`
    png_bytes(size=64)       a small valid greyscale PNG made here (no data folder needed)
    active_model             a registered, active model of random bytes (enough for uploads; the worker would
                             fail it, which is what the failure paths want)
    record_set               a case of `organization` with one uploaded scan, its queued prediction and one heat
                             map, for the access matrix
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.phantoms import head_png


@pytest.fixture(autouse=True)
def _fresh_throttles():
    # Throttle counters live in the (process-local) cache; every test starts with none.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def token_for(db):
    from accounts.api.services import api_token_get_or_create

    def make(user) -> str:
        return api_token_get_or_create(user=user)[0].key

    return make


@pytest.fixture
def client_for(token_for):
    def make(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
        return client

    return make


def make_png(size: int = 64, *, value: int = 90) -> bytes:
    """A synthetic head phantom PNG; ``value`` is the grey of a small square inside it (different values, different
    files)."""
    return head_png(size, value=value)


@pytest.fixture
def png_bytes():
    return make_png


@pytest.fixture
def active_model(db, fake_model_dir):
    from inference.services import model_version_register

    version, _ = model_version_register(path=fake_model_dir, activate=True)
    return version


@pytest.fixture
def record_set(case, clinician, active_model):
    from django.core.files.base import ContentFile
    from django.core.files.uploadedfile import SimpleUploadedFile

    from inference.models import HeatMap
    from inference.services import scan_submit

    scan, prediction = scan_submit(case=case, user=clinician, files=[SimpleUploadedFile("slice.png", make_png())])
    heatmap = HeatMap(prediction=prediction, slice=scan.slices.get(), index=0, probability=0.5)
    heatmap.image.save("heatmap.png", ContentFile(make_png(value=200)), save=True)
    return {"case": case, "scan": scan, "prediction": prediction, "model": active_model}
