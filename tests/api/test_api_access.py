"""Access matrix: every endpoint and method, for anonymous, a clinician, an auditor and an admin of the records'
organization, and a clinician of another organization. Deny by default; other organizations' records are 404."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.models import Prediction
from scans.models import Case, Scan
from tests.api.conftest import make_png

USERS = ["anonymous", "clinician", "auditor", "admin", "other"]

# (method, path template, body kind, expected status per USERS)
MATRIX = [
    ("get", "/api/v1/me/", None, [401, 200, 200, 200, 200]),
    ("get", "/api/v1/me/token/", None, [401, 200, 200, 200, 200]),
    ("post", "/api/v1/me/token/", None, [401, 201, 201, 201, 201]),
    ("delete", "/api/v1/me/token/", None, [401, 204, 204, 204, 204]),
    ("delete", "/api/v1/auth/token/", None, [401, 204, 204, 204, 204]),
    ("get", "/api/v1/cases/", None, [401, 200, 200, 200, 200]),
    ("post", "/api/v1/cases/", "case", [401, 201, 403, 201, 201]),
    ("get", "/api/v1/cases/{case}/", None, [401, 200, 200, 200, 404]),
    ("patch", "/api/v1/cases/{case}/", "case_update", [401, 200, 403, 200, 404]),
    ("put", "/api/v1/cases/{case}/", "case_update", [401, 405, 405, 405, 405]),
    ("delete", "/api/v1/cases/{case}/", None, [401, 405, 405, 405, 405]),
    ("get", "/api/v1/cases/{case}/scans/", None, [401, 200, 200, 200, 404]),
    ("post", "/api/v1/cases/{case}/scans/", "upload", [401, 201, 403, 201, 404]),
    ("get", "/api/v1/scans/", None, [401, 200, 200, 200, 200]),
    ("post", "/api/v1/scans/", "case", [401, 405, 403, 405, 405]),
    ("get", "/api/v1/scans/{scan}/", None, [401, 200, 200, 200, 404]),
    ("delete", "/api/v1/scans/{scan}/", None, [401, 405, 405, 405, 405]),
    ("get", "/api/v1/scans/{scan}/slices/0/preview/", None, [401, 200, 200, 200, 404]),
    ("get", "/api/v1/scans/{scan}/slices/0/file/", None, [401, 200, 200, 200, 404]),
    ("get", "/api/v1/scans/{scan}/slices/7/preview/", None, [401, 404, 404, 404, 404]),
    ("get", "/api/v1/predictions/", None, [401, 200, 200, 200, 200]),
    ("get", "/api/v1/predictions/{prediction}/", None, [401, 200, 200, 200, 404]),
    ("delete", "/api/v1/predictions/{prediction}/", None, [401, 405, 405, 405, 405]),
    ("post", "/api/v1/predictions/{prediction}/rerun/", "rerun", [401, 200, 403, 200, 404]),
    ("get", "/api/v1/predictions/{prediction}/heatmaps/0/", None, [401, 200, 200, 200, 404]),
    ("get", "/api/v1/predictions/{prediction}/heatmaps/3/", None, [401, 404, 404, 404, 404]),
    ("get", "/api/v1/models/", None, [401, 200, 200, 200, 200]),
    ("post", "/api/v1/models/", "case", [401, 403, 403, 403, 403]),
    ("get", "/api/v1/models/{model}/", None, [401, 200, 200, 200, 200]),
]

CASES = [
    pytest.param(method, path, body, who, expected[i], id=f"{method.upper()} {path} {who}")
    for method, path, body, expected in MATRIX
    for i, who in enumerate(USERS)
]


def _body(kind: str | None) -> tuple[dict | None, str | None]:
    if kind == "case":
        return {"patient_ref": "HOSP-000999", "title": "Matrix"}, "json"
    if kind == "case_update":
        return {"title": "Renamed"}, "json"
    if kind == "rerun":
        return {}, "json"
    if kind == "upload":
        return {"files": [SimpleUploadedFile("slice.png", make_png())]}, "multipart"
    return None, None


@pytest.mark.parametrize(("method", "path", "body_kind", "who", "expected"), CASES)
def test_access_matrix(
    method, path, body_kind, who, expected, record_set, client_for, clinician, auditor, org_admin, other_clinician
):
    users = {
        "anonymous": None,
        "clinician": clinician,
        "auditor": auditor,
        "admin": org_admin,
        "other": other_clinician,
    }
    client = client_for(users[who])
    url = path.format(
        case=record_set["case"].pk,
        scan=record_set["scan"].pk,
        prediction=record_set["prediction"].pk,
        model=record_set["model"].pk,
    )
    counts = (Case.objects.count(), Scan.objects.count(), Prediction.objects.count())
    data, fmt = _body(body_kind)
    response = getattr(client, method)(url, data, format=fmt) if data is not None else getattr(client, method)(url)
    assert response.status_code == expected, getattr(response, "content", b"")[:500]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"detail", "code", "errors"} and body["detail"]
    if method != "get" and response.status_code >= 400:
        # A refused write leaves nothing behind.
        assert (Case.objects.count(), Scan.objects.count(), Prediction.objects.count()) == counts


@pytest.mark.parametrize("url", ["/api/v1/cases/", "/api/v1/scans/", "/api/v1/predictions/"])
def test_other_organization_lists_are_empty_and_own_are_complete(url, record_set, client_for, other_clinician, auditor):
    assert client_for(other_clinician).get(url).json()["count"] == 0
    assert client_for(auditor).get(url).json()["count"] == 1


def test_other_organization_cannot_upload_even_with_the_case_id(record_set, client_for, other_clinician, private_files):
    before = private_files()
    response = client_for(other_clinician).post(
        f"/api/v1/cases/{record_set['case'].pk}/scans/",
        {"files": [SimpleUploadedFile("slice.png", make_png())]},
        format="multipart",
    )
    assert response.status_code == 404
    assert Scan.objects.count() == 1 and private_files() == before


def test_filters_by_case_status_label_model_and_date(record_set, client_for, clinician, auditor):
    import datetime

    from django.utils import timezone

    client = client_for(auditor)
    prediction = record_set["prediction"]
    Prediction.objects.filter(pk=prediction.pk).update(status="succeeded", label=True, probability=0.9)

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/v1/predictions/?{query}")
        assert response.status_code == 200, response.content
        return [p["id"] for p in response.json()["results"]]

    mine = [str(prediction.pk)]
    assert ids(f"case={record_set['case'].pk}") == mine
    assert ids(f"scan={record_set['scan'].pk}") == mine
    assert ids("status=succeeded") == mine and ids("status=queued") == []
    assert ids("label=true") == mine and ids("label=false") == []
    assert ids("label=1") == ids("label=TRUE") == ids("label=yes") == mine
    assert ids("label=0") == ids("label=No") == []  # was the unfiltered list: "negatives" held the positives
    maybe = client.get("/api/v1/predictions/?label=maybe")
    assert maybe.status_code == 400 and list(maybe.json()["errors"]) == ["label"]
    assert ids(f"model_version={record_set['model'].pk}") == mine
    assert ids(f"model_version_name={record_set['model'].version}") == mine and ids("model_version_name=x") == []
    today = timezone.now().date()
    assert ids(f"created_after={today.isoformat()}") == mine
    assert ids(f"created_before={today.isoformat()}") == mine  # a date as the upper bound: through that day
    assert ids(f"created_after={today.isoformat()}&created_before={today.isoformat()}") == mine
    assert ids(f"created_before={(today - datetime.timedelta(days=1)).isoformat()}") == []
    assert ids(f"created_before={today.isoformat()}T00:00:00Z") == []  # a time means that instant
    assert ids("created_after=2000-01-01T00:00:00Z&created_before=2100-01-01T00:00:00Z") == mine

    body = client.get("/api/v1/predictions/?status=nonsense").json()
    assert set(body["errors"]) == {"status"} and body["detail"].startswith("status:")
    assert client.get("/api/v1/predictions/?case=not-a-uuid").status_code == 400

    scans = client.get(f"/api/v1/scans/?case={record_set['case'].pk}&kind=image").json()
    assert scans["count"] == 1 and scans["results"][0]["prediction"]["id"] == str(prediction.pk)
    assert client.get("/api/v1/cases/?q=000123").json()["count"] == 1
    assert client.get("/api/v1/cases/?patient_ref=HOSP-000124").json()["count"] == 0


def test_pagination(client_for, clinician):
    from scans.services import case_create

    for i in range(5):
        case_create(user=clinician, patient_ref=f"PAGE-{i:03d}")
    client = client_for(clinician)
    first = client.get("/api/v1/cases/?page_size=2&ordering=patient_ref").json()
    assert first["count"] == 5 and len(first["results"]) == 2 and first["next"] and first["previous"] is None
    assert [c["patient_ref"] for c in first["results"]] == ["PAGE-000", "PAGE-001"]
    last = client.get("/api/v1/cases/?page_size=2&page=3&ordering=patient_ref").json()
    assert [c["patient_ref"] for c in last["results"]] == ["PAGE-004"] and last["next"] is None
    assert client.get("/api/v1/cases/?page=99").status_code == 404


def test_case_create_validates_the_patient_reference(client_for, clinician):
    response = client_for(clinician).post("/api/v1/cases/", {"patient_ref": "John Smith"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert list(body["errors"]) == ["patient_ref"] and "Never enter a patient's name" in body["detail"]
    assert not Case.objects.exists()


def test_case_view_is_audited(record_set, client_for, auditor):
    from accounts.models import AuditAction, AuditEvent

    assert client_for(auditor).get(f"/api/v1/cases/{record_set['case'].pk}/").status_code == 200
    assert AuditEvent.objects.filter(action=AuditAction.CASE_VIEW, actor=auditor).count() == 1
