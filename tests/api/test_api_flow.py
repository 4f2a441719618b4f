"""The integration flow of docs/API.md against a real Celery worker: token, case, upload, poll, heat maps.

Uses the trained default model when there is one, else a randomly initialised network of the same architecture
(see tests/api/conftest.py): the API and the worker are what is tested here, not the model's accuracy.
"""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.api.conftest import make_png
from tests.conftest import PASSWORD

POLL_TIMEOUT_S = 300


def _poll(client: APIClient, url: str) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        if body["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def _start(clinician) -> tuple[APIClient, str]:
    client = APIClient()
    issued = client.post("/api/v1/auth/token/", {"username": clinician.email, "password": PASSWORD}, format="json")
    assert issued.status_code == 200, issued.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {issued.json()['token']}")
    created = client.post("/api/v1/cases/", {"patient_ref": "API-FLOW-001", "title": "Flow"}, format="json")
    assert created.status_code == 201, created.content
    return client, created.json()["id"]


def _series_zip(paths) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, f"series/{path.name}")
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "dicom_zip"])
def test_flow_with_a_real_worker(
    kind, request, transactional_db, celery_worker, model_version, clinician, other_clinician, token_for
):
    if kind == "png":
        path = request.getfixturevalue("head_ct_png")
        files, slices = [SimpleUploadedFile(path.name, path.read_bytes())], 1
    else:
        paths = request.getfixturevalue("ge_series_paths")  # 28 files, shuffled: ingestion must order them
        files, slices = [SimpleUploadedFile("ge_head_series.zip", _series_zip(paths))], 28

    client, case_id = _start(clinician)
    uploaded = client.post(f"/api/v1/cases/{case_id}/scans/", {"files": files}, format="multipart")
    assert uploaded.status_code == 201, uploaded.content
    scan = uploaded.json()
    assert scan["slice_count"] == slices
    assert scan["prediction"]["status"] in ("queued", "running", "succeeded")
    prediction_id = scan["prediction"]["id"]

    result = _poll(client, f"/api/v1/predictions/{prediction_id}/")
    assert result["status"] == "succeeded", result
    assert result["error"] == ""
    assert 0.0 <= result["probability"] <= 1.0
    # A series is judged at the card's series threshold (chosen on validation series), a single image at the other.
    series_threshold = model_version.card.get("series_threshold")
    expected = series_threshold if slices > 1 and series_threshold is not None else model_version.threshold
    assert result["threshold"] == pytest.approx(expected)
    assert result["label"] == (result["probability"] >= result["threshold"])
    assert result["model_version"]["version"] == model_version.version
    assert len(result["slice_probabilities"]) == slices
    assert all(0.0 <= p <= 1.0 for p in result["slice_probabilities"])
    assert [h["index"] for h in result["heatmaps"]] == list(range(slices))

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other_clinician)}")
    for heatmap in (result["heatmaps"][0], result["heatmaps"][-1]):
        image = client.get(heatmap["url"])
        assert image.status_code == 200 and image["Content-Type"] == "image/png"
        assert b"".join(image.streaming_content).startswith(b"\x89PNG")
        assert other.get(heatmap["url"]).status_code == 404
        assert APIClient().get(heatmap["url"]).status_code == 401
    assert other.get(f"/api/v1/predictions/{prediction_id}/").status_code == 404

    detail = client.get(f"/api/v1/scans/{scan['id']}/").json()
    assert [s["index"] for s in detail["slices"]] == list(range(slices))
    if kind == "dicom_zip":
        positions = [s["slice_position"] for s in detail["slices"]]
        assert positions == sorted(positions) or positions == sorted(positions, reverse=True)
        preview = client.get(detail["slices"][14]["preview_url"])
        assert preview.status_code == 200 and b"".join(preview.streaming_content).startswith(b"\x89PNG")
    listed = client.get(f"/api/v1/predictions/?case={case_id}&status=succeeded").json()
    assert [p["id"] for p in listed["results"]] == [prediction_id]


@pytest.mark.slow
def test_flow_reports_a_failed_prediction_with_its_error(transactional_db, celery_worker, clinician, fake_model_dir):
    # Needs neither data nor a trained model: the worker finds the weights changed since registration.
    from inference.services import model_version_register

    model_version_register(path=fake_model_dir, activate=True, copy=False)
    (fake_model_dir / "model.pt").write_bytes(b"tampered")
    client, case_id = _start(clinician)
    uploaded = client.post(
        f"/api/v1/cases/{case_id}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    assert uploaded.status_code == 201, uploaded.content
    result = _poll(client, uploaded.json()["prediction"]["url"])
    assert result["status"] == "failed"
    assert "do not match model version" in result["error"]
    assert str(fake_model_dir) not in result["error"]  # server paths stay in the worker's log
    assert result["probability"] is None and result["heatmaps"] == []


@pytest.mark.slow
def test_the_python_example_in_the_readme_works(
    live_server, celery_worker, model_version, clinician, tmp_path, monkeypatch, capsys
):
    """The README's Python example, run as written against a live server and the real worker."""
    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    code = text.split("### The flow in Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "head_ct").mkdir()
    (tmp_path / "head_ct" / "000.png").write_bytes(make_png(128))
    monkeypatch.chdir(tmp_path)
    for placeholder, value in (
        ('"http://localhost:8000"', repr(live_server.url)),
        ('"alice@example.org"', repr(clinician.email)),
        ('"..."', repr(PASSWORD)),
    ):
        assert placeholder in code
        code = code.replace(placeholder, value)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["prediction"]["status"] == "succeeded", namespace["prediction"]
    assert "succeeded" in capsys.readouterr().out
