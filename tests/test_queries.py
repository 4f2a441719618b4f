"""List pages and API lists cost a fixed number of queries, however many cases, scans and predictions they show
(no query per row), and the polled case endpoints never read slice rows."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from inference.models import HeatMap, Prediction, PredictionStatus
from inference.services import model_version_register, prediction_request
from scans.services import case_create, scan_ingest
from tests.api.conftest import make_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def add_cases(clinician, fake_model_dir):
    """add_cases(n): n more cases, each with two scans and a succeeded prediction with a heat map per scan."""
    model_version_register(path=fake_model_dir, activate=True)
    made = []

    def add(n: int):
        for _ in range(n):
            i = len(made)
            case = case_create(user=clinician, patient_ref=f"QRY-{i:04d}", title=f"Case {i}")
            for j in range(2):
                png = ContentFile(make_png(value=40 + 2 * i + j), name="s.png")
                scan = scan_ingest(case=case, user=clinician, files=[png])
                prediction = prediction_request(scan=scan, user=clinician)
                heatmap = HeatMap(prediction=prediction, slice=scan.slices.get(), index=0, probability=0.7)
                heatmap.image.save("h.png", ContentFile(make_png()), save=False)
                heatmap.save()
                Prediction.objects.filter(pk=prediction.pk).update(
                    status=PredictionStatus.SUCCEEDED, probability=0.7, label=True, slice_probabilities=[0.7]
                )
            made.append(case)
        return made[-1]

    return add


def _count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(queries)


@pytest.fixture
def api(clinician):
    client = APIClient()
    client.force_authenticate(clinician)
    return client


def test_list_pages_and_api_lists_do_not_query_per_row(add_cases, clinician_client, auditor_client, api):
    def counts(case):
        return {
            "dashboard": _count(clinician_client, reverse("cases:dashboard")),
            "case page": _count(clinician_client, reverse("cases:detail", args=[case.pk])),
            "case status": _count(clinician_client, reverse("cases:status", args=[case.pk])),
            "audit events": _count(auditor_client, reverse("audit:events")),
            "audit predictions": _count(auditor_client, reverse("audit:predictions")),
            "api cases": _count(api, "/api/v1/cases/"),
            "api scans": _count(api, "/api/v1/scans/"),
            "api predictions": _count(api, "/api/v1/predictions/"),
            "api case scans": _count(api, f"/api/v1/cases/{case.pk}/scans/"),
        }

    few = counts(add_cases(2))
    many = counts(add_cases(6))  # 8 cases, 16 scans, 16 predictions with heat maps
    assert many == few


def test_dashboard_and_prediction_list_query_budget(add_cases, clinician_client, api, django_assert_max_num_queries):
    add_cases(5)
    # session, user, count, page of cases (latest prediction by subqueries)
    with django_assert_max_num_queries(5):
        response = clinician_client.get(reverse("cases:dashboard"))
    assert response.content.decode().count('href="/predictions/') == 5
    # count, page (with scan, case, model version), heat maps
    with django_assert_max_num_queries(3):
        response = api.get("/api/v1/predictions/")
    assert response.json()["count"] == 10 and all(p["heatmaps"] for p in response.json()["results"])


def test_polled_case_endpoints_never_read_slice_rows(add_cases, clinician_client):
    case = add_cases(1)
    for url in (reverse("cases:detail", args=[case.pk]), reverse("cases:status", args=[case.pk])):
        with CaptureQueriesContext(connection) as queries:
            assert clinician_client.get(url).status_code == 200
        assert not [q["sql"] for q in queries if 'FROM "scans_slice"' in q["sql"]], url
