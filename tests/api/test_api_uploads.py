"""Uploads through the API: the shared ingestion service decides, refusals are 4xx JSON and store nothing."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.models import Prediction
from scans.models import Scan, Slice
from tests.api.conftest import make_png
from tests.bad_uploads import BAD_INPUTS, ct_dicom, page_status, series
from tests.phantoms import bone_window_png


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(make_png(128))
    data[60:90] = b"\x00" * 30  # inside the image data: the CRC no longer matches
    return bytes(data)


BAD_UPLOADS = {
    "non-image": ([("notes.png", b"this is a text file, not an image")], "unsupported_type", "not a supported file"),
    "corrupt-png": ([("slice.png", _corrupt_png())], "corrupt_image", "damaged or incomplete"),
    "truncated-png": ([("slice.png", make_png(128)[:70])], "corrupt_image", "damaged or incomplete"),
    "empty-file": ([("empty.png", b"")], "empty", "is empty"),
    "zip-traversal": ([("series.zip", _zip({"../evil.png": make_png()}))], "zip_unsafe_path", "unsafe path"),
    "zip-absolute": ([("series.zip", _zip({"/etc/evil.png": make_png()}))], "zip_unsafe_path", "unsafe path"),
    "two-images": ([("a.png", make_png()), ("b.png", make_png(value=50))], "several_images", "one image at a time"),
    "no-files": ([], "empty", "No file was uploaded"),
}


@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_upload_is_refused_with_a_message_and_nothing_stored(
    kind, case, clinician, client_for, active_model, private_files
):
    files, code, words = BAD_UPLOADS[kind]
    before = private_files()
    data = {"files": [SimpleUploadedFile(name, content) for name, content in files]} if files else {}
    response = client_for(clinician).post(f"/api/v1/cases/{case.pk}/scans/", data, format="multipart")
    assert response.status_code == page_status(code), response.content
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    assert body["code"] == code, body
    assert words in body["detail"], body
    assert list(body["errors"]) == ["files"] and words in body["errors"]["files"][0]
    assert not Scan.objects.exists() and not Slice.objects.exists() and not Prediction.objects.exists()
    assert private_files() == before


def test_api_and_service_give_the_same_message(case, clinician, client_for, active_model):
    # The API adds no validation of its own: the message is the service's, word for word.
    from scans.services import IngestError, scan_ingest

    bad = b"GIF89a not what we take"
    with pytest.raises(IngestError) as refused:
        scan_ingest(case=case, user=clinician, files=[SimpleUploadedFile("x.gif", bad)])
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("x.gif", bad)]}, format="multipart"
    )
    assert response.json()["errors"]["files"] == refused.value.messages


def test_upload_answer_carries_the_input_check(case, clinician, client_for, active_model):
    url = f"/api/v1/cases/{case.pk}/scans/"
    plain = client_for(clinician).post(url, {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart")
    assert plain.status_code == 201 and plain.json()["input_check"]["verdict"] == "ok"
    unusual = client_for(clinician).post(
        url, {"files": [SimpleUploadedFile("bone.png", bone_window_png())]}, format="multipart"
    )
    assert unusual.status_code == 201
    check = unusual.json()["input_check"]
    assert check["verdict"] == "warn" and check["failed"] == {"no_skull": 1} and check["slices"] == check["total"] == 1
    assert check["message"].startswith("This image looks unlike the brain-window head CT slices")
    # Every key docs/API.md lists (an image states no slice thickness).
    assert check["thick_slices"] == 0 and check["max_slice_thickness_mm"] is None
    assert set(check) == set(Scan.objects.get(pk=unusual.json()["id"]).details["input_check"]) - {
        "version",
        "not_head_ct",
    }
    detail = client_for(clinician).get(unusual.json()["url"]).json()
    assert detail["input_check"] == check
    # Scans stored before the check existed have none.
    scan = Scan.objects.get(pk=unusual.json()["id"])
    scan.details.pop("input_check")
    scan.save(update_fields=["details"])
    assert client_for(clinician).get(unusual.json()["url"]).json()["input_check"] is None


def test_upload_size_limit_comes_from_the_service(case, clinician, client_for, active_model, settings):
    settings.HEMO_MAX_UPLOAD_MB = 0
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    assert response.status_code == 413 and response.json()["code"] == "too_large"


@pytest.mark.parametrize(
    ("name", "content", "overrides", "status", "code"),
    [
        ("s.png", make_png(), {"HEMO_MAX_UPLOAD_MB": 0}, 413, "too_large"),
        ("notes.png", b"this is a text file, not an image", {}, 415, "unsupported_type"),
        ("x.gif", b"GIF89a not what we take", {}, 415, "unsupported_type"),
        ("slice.png", make_png(128)[:70], {}, 400, "corrupt_image"),
    ],
)
def test_api_answers_a_refused_upload_with_the_status_of_the_upload_page(
    name, content, overrides, status, code, case, clinician, client_for, active_model, settings
):
    from django.test import Client
    from django.urls import reverse

    for setting, value in overrides.items():
        setattr(settings, setting, value)
    api = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile(name, content)]}, format="multipart"
    )
    page_client = Client()
    page_client.force_login(clinician, backend="django.contrib.auth.backends.ModelBackend")
    page = page_client.post(reverse("cases:upload", args=[case.pk]), {"files": SimpleUploadedFile(name, content)})
    assert api.status_code == page.status_code == status, (api.content, page.status_code)
    assert api.json()["code"] == code
    assert not Scan.objects.exists()


def test_json_body_is_refused_for_uploads(case, clinician, client_for, active_model):
    response = client_for(clinician).post(f"/api/v1/cases/{case.pk}/scans/", {"files": "x"}, format="json")
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"


def test_upload_without_an_active_model_is_503_and_stores_nothing(
    case, clinician, client_for, settings, tmp_path, private_files
):
    settings.HEMO_MODEL_DIR = tmp_path / "no-model"
    before = private_files()
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    assert response.status_code == 503
    assert response.json()["code"] == "model_unavailable" and "register_model" in response.json()["detail"]
    assert not Scan.objects.exists() and private_files() == before


def test_good_upload_returns_the_scan_with_its_queued_prediction(case, clinician, client_for, active_model):
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    scan = Scan.objects.get()
    assert body["id"] == str(scan.pk) and body["case"] == str(case.pk) and body["slice_count"] == 1
    assert body["kind"] == "image" and body["uploaded_by"] == clinician.username
    assert body["prediction"]["status"] == "queued"
    assert body["prediction"]["id"] == str(Prediction.objects.get(scan=scan).pk)
    assert body["prediction"]["url"].endswith(f"/api/v1/predictions/{body['prediction']['id']}/")


def test_uploads_are_throttled_per_user(case, clinician, org_admin, client_for, active_model, settings):
    settings.HEMO_API_THROTTLE_RATES = {**settings.HEMO_API_THROTTLE_RATES, "upload": "2/hour"}
    client = client_for(clinician)
    url = f"/api/v1/cases/{case.pk}/scans/"
    for value in (60, 70):
        response = client.post(url, {"files": [SimpleUploadedFile("s.png", make_png(value=value))]}, format="multipart")
        assert response.status_code == 201
    response = client.post(url, {"files": [SimpleUploadedFile("s.png", make_png(value=80))]}, format="multipart")
    assert response.status_code == 429 and response.json()["code"] == "throttled"
    assert Scan.objects.count() == 2
    # Reading is not throttled, and another user has their own budget.
    assert client.get(url).status_code == 200
    assert (
        client_for(org_admin)
        .post(url, {"files": [SimpleUploadedFile("s.png", make_png(value=90))]}, format="multipart")
        .status_code
        == 201
    )


def test_rerun_with_another_model_version_creates_a_prediction(
    case, clinician, client_for, active_model, fake_model_dir, tmp_path
):
    import shutil

    from inference.services import model_version_register

    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    first = response.json()["prediction"]["id"]
    other_dir = tmp_path / "other-model"
    shutil.copytree(fake_model_dir, other_dir)
    (other_dir / "model.pt").write_bytes(b"other weights")
    other, _ = model_version_register(path=other_dir, activate=False)
    client = client_for(clinician)
    same = client.post(f"/api/v1/predictions/{first}/rerun/", {}, format="json")
    assert same.status_code == 200 and same.json()["id"] == first
    created = client.post(f"/api/v1/predictions/{first}/rerun/", {"model_version": str(other.pk)}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["model_version"]["id"] == str(other.pk) and created.json()["status"] == "queued"
    by_version = client.post(f"/api/v1/predictions/{first}/rerun/", {"model_version": other.version}, format="json")
    assert by_version.status_code == 200 and by_version.json()["id"] == created.json()["id"]
    unknown = client.post(f"/api/v1/predictions/{first}/rerun/", {"model_version": "9.9.9"}, format="json")
    assert unknown.status_code == 400 and list(unknown.json()["errors"]) == ["model_version"]
    assert Prediction.objects.count() == 2
    models = client.get("/api/v1/models/").json()
    assert [m["is_active"] for m in models["results"]] == [True, False]


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_hostile_or_broken_upload_is_a_4xx_with_its_code_and_stores_nothing(
    kind, case, clinician, client_for, active_model, private_files, settings
):
    make_files, code, words, overrides = BAD_INPUTS[kind]
    for name, value in overrides.items():
        setattr(settings, name, value)
    before = private_files()
    files = [SimpleUploadedFile(name, content) for name, content in make_files()]
    response = client_for(clinician).post(f"/api/v1/cases/{case.pk}/scans/", {"files": files}, format="multipart")
    assert response.status_code == page_status(code), response.content
    assert 400 <= response.status_code < 500
    body = response.json()
    assert body["code"] == code and words in body["detail"], body
    assert not Scan.objects.exists() and not Slice.objects.exists() and not Prediction.objects.exists()
    assert private_files() == before


def test_malformed_dicom_in_a_series_is_refused_and_what_was_stored_stays(
    case, clinician, client_for, active_model, private_files
):
    url = f"/api/v1/cases/{case.pk}/scans/"
    stored = client_for(clinician).post(
        url, {"files": [SimpleUploadedFile("s.zip", _zip(series(2)))]}, format="multipart"
    )
    assert stored.status_code == 201, stored.content
    files_before, slices_before = private_files(), set(Slice.objects.values_list("pk", "sha256"))
    # Good slices and one whose InstanceNumber holds two values: pydicom reads it, int() of it raises TypeError.
    archive = _zip({**series(2), "series/003.dcm": ct_dicom(instance=3, InstanceNumber=[3, 4])})
    response = client_for(clinician).post(url, {"files": [SimpleUploadedFile("s.zip", archive)]}, format="multipart")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "corrupt_dicom" and "003.dcm cannot be read" in response.json()["detail"]
    assert [str(pk) for pk in Scan.objects.values_list("pk", flat=True)] == [stored.json()["id"]]
    assert set(Slice.objects.values_list("pk", "sha256")) == slices_before
    assert private_files() == files_before


def test_zip_upload_lists_the_files_it_skipped(case, clinician, client_for, active_model):
    archive = _zip({**series(3), "series/LICENSE": b"MIT License\n"})
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.zip", archive)]}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert response.json()["slice_count"] == 3 and response.json()["skipped_files"] == ["LICENSE"]
    detail = client_for(clinician).get(response.json()["url"]).json()
    assert detail["skipped_files"] == ["LICENSE"] and detail["details"]["skipped_files"] == ["LICENSE"]


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(case, clinician, client_for, settings):
    """A client declaring 50 GB gets 413 from its Content-Length alone: Django never spools the body to disk, and
    nothing is stored (the short body actually sent is never parsed)."""
    settings.HEMO_MAX_UPLOAD_MB = 1
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/",
        {"files": [SimpleUploadedFile("s.png", make_png())]},
        format="multipart",
        CONTENT_LENGTH=str(50 * 1024**3),
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The upload is 51200.0 MB; the limit is 1 MB.",
        "code": "too_large",
        "errors": {},
    }
    assert Scan.objects.count() == 0 and Slice.objects.count() == 0 and Prediction.objects.count() == 0


def test_of_two_reruns_at_the_same_moment_only_the_one_that_created_says_201(
    transactional_db, case, clinician, client_for, active_model, fake_model_dir, tmp_path
):
    """Another request has inserted the prediction and not yet committed when this rerun asks: the rerun waits on
    the unique (scan, model version) row and must answer 200 with that prediction, not 201 as if it had made it."""
    import shutil
    import threading
    import time

    from django.db import connection, transaction

    from inference.services import model_version_register, prediction_request

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (row locks seen in pg_stat_activity); scripts/test.sh sets DATABASE_URL")
    response = client_for(clinician).post(
        f"/api/v1/cases/{case.pk}/scans/", {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart"
    )
    first = Prediction.objects.get(pk=response.json()["prediction"]["id"])
    other_dir = tmp_path / "other-model"
    shutil.copytree(fake_model_dir, other_dir)
    (other_dir / "model.pt").write_bytes(b"other weights")
    other, _ = model_version_register(path=other_dir, activate=False)
    client = client_for(clinician)
    inserted, release, outcome = threading.Event(), threading.Event(), {}

    def the_other_request():
        try:
            with transaction.atomic():
                outcome["theirs"] = prediction_request(scan=first.scan, model_version=other, user=clinician).pk
                inserted.set()
                release.wait(30)
        finally:
            connection.close()

    def this_rerun():
        try:
            outcome["ours"] = client.post(
                f"/api/v1/predictions/{first.pk}/rerun/", {"model_version": str(other.pk)}, format="json"
            )
        finally:
            connection.close()

    theirs = threading.Thread(target=the_other_request)
    theirs.start()
    assert inserted.wait(30)
    ours = threading.Thread(target=this_rerun)
    ours.start()
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:  # wait until the rerun is blocked on the uncommitted row
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            release.set()
            pytest.fail("the rerun never waited on the other request's row")
    release.set()
    theirs.join(30)
    ours.join(30)
    assert outcome["ours"].status_code == 200, outcome["ours"].content
    assert outcome["ours"].json()["id"] == str(outcome["theirs"])
    assert Prediction.objects.filter(scan=first.scan).count() == 2


def test_django_request_limits_and_chunked_bodies_are_json_errors_that_say_what_to_do(
    case, clinician, client_for, active_model, settings
):
    client = client_for(clinician)
    url = f"/api/v1/cases/{case.pk}/scans/"
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [SimpleUploadedFile(f"s{i}.png", make_png(value=60 + i)) for i in range(4)]
    many = client.post(url, {"files": files}, format="multipart")
    assert many.status_code == 413 and many.json()["code"] == "too_many_slices", many.content
    assert "more than 3 files" in many.json()["detail"] and "DATA_UPLOAD" not in many.json()["detail"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    big = client.post("/api/v1/cases/", {"patient_ref": "HOSP-000999", "title": "x" * 4000}, format="json")
    assert big.status_code == 413 and big.json()["code"] == "too_large" and "DATA_UPLOAD" not in big.json()["detail"]
    chunked = client.post(
        url,
        {"files": [SimpleUploadedFile("s.png", make_png())]},
        format="multipart",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    assert chunked.status_code == 411 and chunked.json()["code"] == "length_required"
    assert "Content-Length" in chunked.json()["detail"]
    assert not Scan.objects.exists()


def test_case_patch_changes_title_and_notes_and_refuses_anything_else(case, clinician, client_for):
    client = client_for(clinician)
    url = f"/api/v1/cases/{case.pk}/"
    changed = client.patch(url, {"title": "Day 2"}, format="json")
    assert changed.status_code == 200 and changed.json()["title"] == "Day 2"
    refused = client.patch(url, {"patient_ref": "CHANGED-1", "colour": "red", "title": "Day 3"}, format="json")
    assert refused.status_code == 400, refused.content
    errors = refused.json()["errors"]
    assert set(errors) == {"patient_ref", "colour"} and "cannot be changed" in errors["patient_ref"][0]
    case.refresh_from_db()
    assert (case.patient_ref, case.title) == ("HOSP-000123", "Day 2")  # nothing of the refused request applied


def test_slice_files_answer_the_accept_header_of_their_stored_type(case, clinician, client_for, active_model):
    client = client_for(clinician)
    url = f"/api/v1/cases/{case.pk}/scans/"
    dicom = client.post(url, {"files": [SimpleUploadedFile("s.zip", _zip(series(2)))]}, format="multipart").json()
    png = client.post(url, {"files": [SimpleUploadedFile("s.png", make_png())]}, format="multipart").json()

    def fetch(scan: dict, accept: str):
        return client.get(f"/api/v1/scans/{scan['id']}/slices/0/file/", HTTP_ACCEPT=accept)

    as_dicom = fetch(dicom, "application/dicom")
    assert as_dicom.status_code == 200 and as_dicom["Content-Type"] == "application/dicom"
    assert b"".join(as_dicom.streaming_content)[128:132] == b"DICM"
    assert fetch(png, "image/png")["Content-Type"] == "image/png"
    assert fetch(dicom, "*/*")["Content-Type"] == "application/dicom"
    listing_all = fetch(dicom, "application/dicom;q=1, image/png;q=0.1, image/jpeg")  # a PACS client
    assert listing_all.status_code == 200 and listing_all["Content-Type"] == "application/dicom"
    assert fetch(png, "image/*")["Content-Type"] == "image/png"
    wrong = fetch(png, "application/dicom")
    assert wrong.status_code == 406 and "stored as image/png" in wrong.json()["detail"]
    assert fetch(dicom, "image/jpeg").status_code == 406
