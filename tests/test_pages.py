"""Server-rendered pages through the Django test client: who may open what, what each page shows, and uploads that
must be refused with a clear message, a 4xx status and nothing stored.

Real services, storage and database throughout; the only shortcut is `finished_prediction`, which writes a finished
prediction's row and heat-map file directly so that the result page can be checked without running the model (the
browser tests run the real worker and model).
"""

from __future__ import annotations

import io
import json
import uuid

import pydicom
import pytest
from django.core.files.base import ContentFile
from django.test import override_settings
from django.urls import reverse
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from accounts.models import AuditAction, AuditEvent
from inference.models import HeatMap, Prediction, PredictionStatus
from inference.services import model_version_register
from scans.models import Case, Scan, Slice
from scans.services import case_create, scan_ingest
from tests.bad_uploads import BAD_INPUTS, page_status, series, zip_bytes
from tests.phantoms import bone_window_png
from tests.phantoms import head_png as phantom_png

LOGIN_URL = reverse("account_login")


# --- helpers and fixtures ---------------------------------------------------------------------------------------------


def head_png(size: int = 128) -> bytes:
    """A synthetic greyscale head (tests.phantoms): a white skull ring around brain-grey tissue, on black."""
    return phantom_png(size)


def mr_dicom() -> bytes:
    """A valid DICOM file made with pydicom whose modality is MR: ingestion must refuse it (CT only)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("mr.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientName = "Test^Patient"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256)) * 2
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def png_bytes(color: int = 128, size: tuple[int, int] = (32, 32), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def active_model(fake_model_dir):
    """A registered, active model version with training plots (random weights: enough for every page)."""
    (fake_model_dir / "curves.png").write_bytes(png_bytes(200, (64, 48), "RGB"))
    (fake_model_dir / "roc.png").write_bytes(png_bytes(100, (48, 48), "RGB"))
    version, _ = model_version_register(path=fake_model_dir, activate=True)
    return version


@pytest.fixture
def scan(case, clinician, upload):
    return scan_ingest(case=case, user=clinician, files=[upload(head_png(), name="head.png")])


@pytest.fixture
def finished_prediction(scan, clinician, active_model):
    """A succeeded prediction of `scan` with a heat-map overlay file, as the worker leaves it."""
    from inference.services import prediction_request

    prediction = prediction_request(scan=scan, user=clinician)
    slice_ = scan.slices.get()
    heatmap = HeatMap(prediction=prediction, slice=slice_, index=0, probability=0.91)
    heatmap.image.save("heatmap.png", ContentFile(png_bytes(90, (64, 64), "RGB")), save=False)
    heatmap.save()
    Prediction.objects.filter(pk=prediction.pk).update(
        status=PredictionStatus.SUCCEEDED,
        probability=0.91,
        label=True,
        threshold=0.42,
        slice_probabilities=[0.91],
        timings={"inference": 0.12, "total": 0.5},
        worker_host="worker-1",
        attempts=1,
    )
    prediction.refresh_from_db()
    return prediction


def body(response) -> str:
    return response.content.decode()


# --- public pages and anonymous access --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_home_is_public_and_sends_members_to_their_dashboard(client, clinician_client):
    response = client.get("/")
    assert response.status_code == 200
    assert "Intracranial hemorrhage detection" in body(response)
    assert reverse("account_signup") in body(response) and LOGIN_URL in body(response)
    assert "not a diagnos" in body(response)
    assert clinician_client.get("/").url == reverse("cases:dashboard")


@pytest.mark.django_db
def test_sign_in_and_sign_up_pages_use_the_site_design(client):
    login = client.get(LOGIN_URL)
    assert login.status_code == 200
    assert 'data-testid="login-form"' in body(login) and "css/hemo.css" in body(login)
    signup = client.get(reverse("account_signup"))
    assert signup.status_code == 200
    assert 'name="organization_name"' in body(signup) and 'data-testid="signup-form"' in body(signup)
    reset = client.get(reverse("account_reset_password"))
    assert reset.status_code == 200 and "css/hemo.css" in body(reset) and 'class="btn' in body(reset)


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_sign_in(client, finished_prediction, active_model):
    prediction = finished_prediction
    case = prediction.scan.case
    urls = [
        reverse("cases:dashboard"),
        reverse("cases:create"),
        reverse("cases:detail", args=[case.pk]),
        reverse("cases:edit", args=[case.pk]),
        reverse("cases:status", args=[case.pk]),
        reverse("results:detail", args=[prediction.pk]),
        reverse("results:status", args=[prediction.pk]),
        reverse("results:model-active"),
        reverse("results:model", args=[active_model.pk]),
        reverse("results:model-artifact", args=[active_model.pk, "curves"]),
        reverse("audit:predictions"),
        reverse("audit:events"),
        reverse("audit:predictions-export"),
        reverse("audit:events-export"),
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.url.startswith(f"{LOGIN_URL}?next="), url
    for url in (reverse("cases:upload", args=[case.pk]), reverse("results:request", args=[prediction.scan_id])):
        response = client.post(url)
        assert response.status_code == 302 and response.url.startswith(LOGIN_URL), url
    assert Scan.objects.count() == 1


# --- pages for each role ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dashboard_lists_cases_with_latest_prediction_search_and_filters(
    clinician, clinician_client, finished_prediction
):
    other = case_create(user=clinician, patient_ref="HOSP-000999", title="Follow-up scan")
    url = reverse("cases:dashboard")
    page = body(clinician_client.get(url))
    assert "HOSP-000123" in page and "HOSP-000999" in page
    assert "Suspected 91.0 %" in page
    assert reverse("cases:create") in page
    assert clinician.organization.name in page and "Clinician" in page  # the nav shows user, org and role

    searched = body(clinician_client.get(url, {"q": "follow"}))
    assert "HOSP-000999" in searched and "HOSP-000123" not in searched
    not_analysed = body(clinician_client.get(url, {"status": "none"}))
    assert "HOSP-000999" in not_analysed and "HOSP-000123" not in not_analysed
    positive = body(clinician_client.get(url, {"label": "positive"}))
    assert "HOSP-000123" in positive and "HOSP-000999" not in positive
    assert "No case matches" in body(clinician_client.get(url, {"label": "negative"}))
    assert other.pk


@pytest.mark.django_db
def test_dashboard_paginates(clinician, clinician_client):
    for i in range(23):
        case_create(user=clinician, patient_ref=f"PAGE-{i:04d}")
    first = body(clinician_client.get(reverse("cases:dashboard")))
    assert "Page 1 of 2" in first and "?page=2" in first
    second = body(clinician_client.get(reverse("cases:dashboard"), {"page": 2}))
    assert second.count('data-testid="case-table"') == 1 and "PAGE-0000" in second  # oldest on the last page


@pytest.mark.django_db
def test_case_page_shows_scans_history_and_upload_form(clinician_client, finished_prediction):
    case = finished_prediction.scan.case
    response = clinician_client.get(reverse("cases:detail", args=[case.pk]))
    page = body(response)
    assert response.status_code == 200
    assert "HOSP-000123" in page and "Head CT after fall" in page
    assert reverse("scans:scan-thumbnail", args=[finished_prediction.scan_id]) in page
    assert reverse("results:detail", args=[finished_prediction.pk]) in page
    assert finished_prediction.model_version.version in page and "91.0 %" in page
    assert 'enctype="multipart/form-data"' in page and reverse("cases:upload", args=[case.pk]) in page
    assert "data-poll-url" not in page  # nothing pending
    assert AuditEvent.objects.filter(action=AuditAction.CASE_VIEW, target_id=str(case.pk)).exists()


@pytest.mark.django_db
def test_case_page_polls_while_a_prediction_is_queued(clinician, clinician_client, scan, active_model):
    from inference.services import prediction_request

    prediction = prediction_request(scan=scan, user=clinician)
    page = body(clinician_client.get(reverse("cases:detail", args=[scan.case_id])))
    assert 'data-poll-url="' + reverse("cases:status", args=[scan.case_id]) in page
    assert '<meta http-equiv="refresh"' in page  # without JavaScript
    status = clinician_client.get(reverse("cases:status", args=[scan.case_id])).json()
    assert status["pending"] is True and status["predictions"][0]["id"] == str(prediction.pk)
    result = clinician_client.get(reverse("results:status", args=[prediction.pk])).json()
    assert result == {"state": "queued", "pending": True, "status": "queued", "probability": None, "label": None}


@pytest.mark.django_db
def test_result_page_shows_probability_threshold_chart_viewer_and_disclaimer(clinician_client, finished_prediction):
    prediction = finished_prediction
    response = clinician_client.get(reverse("results:detail", args=[prediction.pk]))
    page = body(response)
    assert response.status_code == 200
    assert 'data-testid="probability">91.0 %' in page
    assert "Hemorrhage suspected" in page and "Threshold used: <strong>42.0 %" in page
    assert reverse("results:model", args=[prediction.model_version_id]) in page
    assert "worker-1" in page
    assert 'data-testid="slice-chart" data-slices="1"' in page and 'data-testid="threshold-line"' in page
    assert reverse("inference:heatmap", args=[prediction.pk, 0]) in page  # viewer data (overlay)
    slice_ = prediction.scan.slices.get()
    assert reverse("scans:slice-preview", args=[slice_.pk]) in page
    assert "Decision support, not a diagnosis" in page
    assert "data-poll-url" not in page


@pytest.mark.django_db
def test_result_page_of_a_failed_prediction_shows_the_error_and_retry(clinician_client, finished_prediction):
    Prediction.objects.filter(pk=finished_prediction.pk).update(
        status=PredictionStatus.FAILED,
        error_message="ModelArtifactError: weights do not match",
        probability=None,
        label=None,
    )
    page = body(clinician_client.get(reverse("results:detail", args=[finished_prediction.pk])))
    assert "Analysis failed" in page and "weights do not match" in page
    assert reverse("results:request", args=[finished_prediction.scan_id]) in page
    response = clinician_client.post(reverse("results:request", args=[finished_prediction.scan_id]))
    assert response.status_code == 302
    finished_prediction.refresh_from_db()
    assert finished_prediction.status == PredictionStatus.QUEUED and finished_prediction.error_message == ""


@pytest.mark.django_db
def test_model_page_shows_the_card_and_serves_its_plots(clinician_client, active_model):
    page = body(clinician_client.get(reverse("results:model-active")))
    assert active_model.sha256 in page and "0.0.1" in page and "0.420" in page
    assert "Test-time augmentation" not in page and "Calibration command" not in page  # the fake card has neither
    assert reverse("results:model-artifact", args=[active_model.pk, "curves"]) in page
    for name in ("curves", "roc"):
        response = clinician_client.get(reverse("results:model-artifact", args=[active_model.pk, name]))
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert clinician_client.get(f"/models/{active_model.pk}/model.png").status_code == 404
    assert clinician_client.get(reverse("results:model", args=[uuid.uuid4()])).status_code == 404


@pytest.mark.django_db
def test_model_page_shows_test_time_augmentation_and_calibration(clinician_client, fake_model_dir):
    card = json.loads((fake_model_dir / "metadata.json").read_text())
    card.update(
        tta="hflip",
        tta_method="chosen on validation",
        calibration={"command": "python -m ml.calibrate --tta auto", "note": "weights unchanged"},
        series_threshold=0.123,
    )
    (fake_model_dir / "metadata.json").write_text(json.dumps(card))
    version, _ = model_version_register(path=fake_model_dir, activate=True)
    page = body(clinician_client.get(reverse("results:model", args=[version.pk])))
    assert "Test-time augmentation" in page and "hflip" in page and "chosen on validation" in page
    assert "python -m ml.calibrate --tta auto" in page and "weights unchanged" in page
    assert '<span data-testid="series-threshold">0.123</span> for series' in page


@pytest.mark.django_db
def test_model_page_reads_the_nested_metrics_of_a_trained_model_card(clinician_client, active_model):
    from inference.models import ModelVersion

    card = {
        "command": "python -m ml.train --seed 0",
        "seed": 0,
        "threshold": 0.37,
        "data": {"head_ct": {"scans": 200, "positive_scans": 100, "slices": 200}},
        "splits": {"head_ct": {"train": list(range(140)), "val": list(range(30)), "test": list(range(30))}},
        "metrics": {
            "validation": {"head_ct": {"scan": {"auc": 0.951, "n": 30, "sensitivity": 0.9}}},
            "test": {"head_ct": {"scan": {"auc": 0.934, "n": 30, "f1": 0.88}}},
        },
    }
    ModelVersion.objects.filter(pk=active_model.pk).update(card=card, metrics=card["metrics"])
    page = body(clinician_client.get(reverse("results:model", args=[active_model.pk])))
    assert 'data-testid="metrics-table"' in page and "0.951" in page and "0.934" in page
    assert "python -m ml.train --seed 0" in page and ">140<" in page and "ensemble-members" not in page

    # An ensemble's card: the joining command, then each member's seed, epochs and training command.
    members = [
        {"version": f"m-s0t{i}", "train_seed": i, "command": f"python -m ml.train --train-seed {i}"}
        | {"epochs_run": 9 + i, "best_epoch": 5 + i, "train_minutes": 7.5, "history": [{"epoch": 1}]}
        for i in (0, 1)
    ]
    ensemble = {"combine": "mean of logits", "members": members}
    card = dict(card, command="python -m ml.ensemble --members a b", ensemble=ensemble)
    card["training"] = {"members": [{"train_seed": 0}], "train_minutes": 15.0, "epochs_run": 19, "best_epoch": [5, 6]}
    ModelVersion.objects.filter(pk=active_model.pk).update(card=card)
    page = body(clinician_client.get(reverse("results:model", args=[active_model.pk])))
    assert "Command that joined the members" in page and "python -m ml.ensemble --members a b" in page
    assert 'data-testid="ensemble-members"' in page and "mean of logits" in page
    for i in (0, 1):
        assert f"python -m ml.train --train-seed {i}" in page and f"m-s0t{i}" in page and f"{9 + i} ({5 + i})" in page
    assert "{&#x27;train_seed&#x27;" not in page, "the members' list is a table, not a raw value among the facts"
    assert "[5, 6]" not in page and ">19<" not in page, "per-member epochs live in the members' table only"


@pytest.mark.django_db
def test_case_create_refuses_names_and_creates_with_a_code(clinician_client):
    url = reverse("cases:create")
    page = body(clinician_client.get(url))
    assert "Never enter a patient" in page
    response = clinician_client.post(url, {"patient_ref": "John Smith", "title": "x"})
    assert response.status_code == 400 and "Never enter a patient" in body(response)
    assert not Case.objects.exists()
    response = clinician_client.post(url, {"patient_ref": "HOSP-004711", "title": "Headache", "notes": "GCS 15"})
    case = Case.objects.get(patient_ref="HOSP-004711")
    assert response.status_code == 302 and response.url == reverse("cases:detail", args=[case.pk])


@pytest.mark.django_db
def test_case_edit_changes_title_and_notes_only(clinician_client, case):
    url = reverse("cases:edit", args=[case.pk])
    assert clinician_client.get(url).status_code == 200
    response = clinician_client.post(url, {"title": "New title", "notes": "More", "patient_ref": "HACK-0001"})
    assert response.status_code == 302
    case.refresh_from_db()
    assert (case.title, case.notes, case.patient_ref) == ("New title", "More", "HOSP-000123")


@pytest.mark.django_db
def test_auditor_reads_everything_but_cannot_write(auditor_client, finished_prediction, private_files):
    case = finished_prediction.scan.case
    assert auditor_client.get(reverse("cases:dashboard")).status_code == 200
    assert reverse("cases:create") not in body(auditor_client.get(reverse("cases:dashboard")))
    page = body(auditor_client.get(reverse("cases:detail", args=[case.pk])))
    assert "HOSP-000123" in page and reverse("cases:upload", args=[case.pk]) not in page
    assert auditor_client.get(reverse("results:detail", args=[finished_prediction.pk])).status_code == 200
    before = private_files()
    response = auditor_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(head_png(), name="head.png")}
    )
    assert response.status_code == 403
    assert Scan.objects.count() == 1 and private_files() == before
    assert auditor_client.get(reverse("cases:create")).status_code == 403
    assert auditor_client.post(reverse("cases:create"), {"patient_ref": "AUD-0001"}).status_code == 403
    assert auditor_client.get(reverse("cases:edit", args=[case.pk])).status_code == 403
    assert auditor_client.post(reverse("results:request", args=[finished_prediction.scan_id])).status_code == 403
    assert not Case.objects.filter(patient_ref="AUD-0001").exists()


@pytest.mark.django_db
def test_audit_pages_for_auditors_and_admins_only(
    auditor_client, org_admin_client, clinician_client, other_clinician_client, finished_prediction, clinician
):
    assert org_admin_client.get(reverse("cases:create")).status_code == 200  # admins work like clinicians
    for url in (reverse("audit:predictions"), reverse("audit:events")):
        assert clinician_client.get(url).status_code == 403
        assert other_clinician_client.get(url).status_code == 403
        assert org_admin_client.get(url).status_code == 200
    page = body(auditor_client.get(reverse("audit:predictions")))
    assert "HOSP-000123" in page and reverse("results:detail", args=[finished_prediction.pk]) in page
    assert "HOSP-000123" in body(
        auditor_client.get(
            reverse("audit:predictions"), {"status": "succeeded", "label": "positive", "user": str(clinician.pk)}
        )
    )
    assert "No prediction matches" in body(auditor_client.get(reverse("audit:predictions"), {"status": "failed"}))
    assert "No prediction matches" in body(auditor_client.get(reverse("audit:predictions"), {"date_to": "2000-01-01"}))

    def cell(action: str) -> str:
        return f'<span class="tag tag--muted">{action}</span>'

    events = body(auditor_client.get(reverse("audit:events")))
    assert cell(AuditAction.SCAN_UPLOAD) in events and cell(AuditAction.CASE_CREATE) in events
    filtered = body(auditor_client.get(reverse("audit:events"), {"action": AuditAction.SCAN_UPLOAD.value}))
    assert cell(AuditAction.SCAN_UPLOAD) in filtered and cell(AuditAction.CASE_CREATE) not in filtered


def csv_rows(response) -> list[dict]:
    import csv

    assert response.status_code == 200, response
    assert response["Content-Type"] == "text/csv; charset=utf-8" and response["Cache-Control"] == "no-store"
    assert (
        response["Content-Disposition"].startswith('attachment; filename="')
        and ".csv" in response["Content-Disposition"]
    )
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")  # spreadsheets read the file as UTF-8
    return list(csv.DictReader(io.StringIO(text[1:])))


@pytest.mark.django_db
def test_audit_exports_are_csv_of_the_filtered_list_audited_and_defused(
    auditor, auditor_client, clinician_client, other_clinician, finished_prediction, clinician, upload, make_user
):
    from inference.pages import PREDICTION_EXPORT_HEADER
    from inference.services import prediction_request

    # Patient references cannot start a formula; usernames can ("-2+3" is a valid one a spreadsheet computes as 1).
    formula = "-2+3"
    colleague = make_user(role="clinician", organization=clinician.organization, username=formula)
    second_case = case_create(user=colleague, patient_ref="HOSP-000777")
    queued = prediction_request(
        scan=scan_ingest(case=second_case, user=colleague, files=[upload(head_png(), name="b.png")]), user=colleague
    )
    foreign_case = case_create(user=other_clinician, patient_ref="OTHER-ORG-1")
    foreign = prediction_request(
        scan=scan_ingest(case=foreign_case, user=other_clinician, files=[upload(head_png(), name="c.png")]),
        user=other_clinician,
    )
    export_url = reverse("audit:predictions-export")
    assert clinician_client.get(export_url).status_code == 403
    assert clinician_client.get(reverse("audit:events-export")).status_code == 403

    rows = csv_rows(auditor_client.get(export_url))
    assert list(rows[0]) == PREDICTION_EXPORT_HEADER
    by_id = {row["prediction_id"]: row for row in rows}
    assert set(by_id) == {str(finished_prediction.pk), str(queued.pk)}  # never another organization's
    assert str(foreign.pk) not in by_id and "OTHER-ORG-1" not in str(rows)
    done = by_id[str(finished_prediction.pk)]
    assert (done["status"], done["probability"], done["threshold"], done["label"]) == (
        "succeeded",
        "0.91",
        "0.42",
        "positive",
    )
    assert done["patient_ref"] == "HOSP-000123" and done["requested_by"] == clinician.username
    assert done["slices"] == "1" and done["worker_host"] == "worker-1" and done["requested"].endswith("+00:00")
    waiting = by_id[str(queued.pk)]
    assert waiting["status"] == "queued" and waiting["label"] == "" and waiting["probability"] == ""
    assert waiting["requested_by"] == "'" + formula  # a spreadsheet shows the text instead of running it

    filtered = csv_rows(auditor_client.get(export_url, {"status": "succeeded", "page": "3"}))
    assert [row["prediction_id"] for row in filtered] == [str(finished_prediction.pk)]
    exports = AuditEvent.objects.filter(action=AuditAction.EXPORT).order_by("id")
    assert [(e.actor, e.details["export"], e.details["rows"]) for e in exports] == [
        (auditor, "predictions", 2),
        (auditor, "predictions", 1),
    ]
    assert exports.last().details["filters"] == {"status": "succeeded"}

    refused = auditor_client.get(export_url, {"status": "lost", "date_from": "yesterday"})
    assert refused.status_code == 400 and refused["Content-Type"].startswith("text/plain")
    assert "nothing was exported" in body(refused) and "Status:" in body(refused) and "From:" in body(refused)
    assert exports.count() == 2  # a refused export is no export

    page = body(auditor_client.get(reverse("audit:predictions"), {"status": "succeeded", "page": "1"}))
    assert f'href="{export_url}?status=succeeded"' in page  # the page's filters, not its page number

    events = csv_rows(auditor_client.get(reverse("audit:events-export"), {"action": AuditAction.SCAN_UPLOAD.value}))
    uploads = AuditEvent.objects.filter(action=AuditAction.SCAN_UPLOAD, organization=clinician.organization)
    assert sorted(row["target_id"] for row in events) == sorted(uploads.values_list("target_id", flat=True))
    assert len(events) == 2 and {row["action_label"] for row in events} == {"Scan uploaded"}
    assert all(
        json.loads(row["details"]) == e.details
        for row, e in zip(events, uploads.order_by("-created", "-id"), strict=True)
    )
    assert "OTHER-ORG-1" not in str(events)


@pytest.mark.django_db
def test_another_organization_gets_404_on_every_case_scan_file_and_result_url(
    other_clinician_client, finished_prediction, private_files
):
    prediction = finished_prediction
    scan = prediction.scan
    case = scan.case
    slice_ = scan.slices.get()
    urls = [
        reverse("cases:detail", args=[case.pk]),
        reverse("cases:edit", args=[case.pk]),
        reverse("cases:status", args=[case.pk]),
        reverse("results:detail", args=[prediction.pk]),
        reverse("results:status", args=[prediction.pk]),
        reverse("scans:scan-thumbnail", args=[scan.pk]),
        reverse("scans:slice-file", args=[slice_.pk]),
        reverse("scans:slice-preview", args=[slice_.pk]),
        reverse("scans:slice-thumbnail", args=[slice_.pk]),
        reverse("inference:heatmap", args=[prediction.pk, 0]),
    ]
    for url in urls:
        response = other_clinician_client.get(url)
        assert response.status_code == 404, url
    assert "HOSP-000123" not in body(other_clinician_client.get(reverse("cases:dashboard")))
    before = private_files()
    response = other_clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(head_png(), name="head.png")}
    )
    assert response.status_code == 404
    assert other_clinician_client.post(reverse("results:request", args=[scan.pk])).status_code == 404
    assert other_clinician_client.post(reverse("cases:edit", args=[case.pk]), {"title": "x"}).status_code == 404
    assert Scan.objects.count() == 1 and private_files() == before
    # The 404 page is the site's own and does not say whether the record exists.
    page = body(other_clinician_client.get(reverse("cases:detail", args=[case.pk])))
    assert "Not found" in page and "HOSP-000123" not in page


# --- uploads ----------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_upload_of_a_png_stores_a_scan_and_queues_its_prediction(clinician_client, case, active_model):
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(head_png(), name="head.png")}
    )
    scan = Scan.objects.get()
    prediction = Prediction.objects.get()
    assert response.status_code == 302 and response.url == reverse("results:detail", args=[prediction.pk])
    assert scan.case == case and scan.slice_count == 1 and prediction.status == PredictionStatus.QUEUED
    page = body(clinician_client.get(response.url))
    assert "Queued for analysis" in page and 'data-poll-url="' in page


@pytest.mark.django_db
def test_an_unusual_image_is_analysed_with_its_warning_on_every_page(
    clinician_client, org_admin_client, case, active_model
):
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(bone_window_png(), name="bone.png")}, follow=True
    )
    scan, prediction = Scan.objects.get(), Prediction.objects.get()
    check = scan.details["input_check"]
    assert check["verdict"] == "warn" and check["failed"] == {"no_skull": 1}
    assert scan.input_warning.startswith("This image looks unlike the brain-window head CT slices")
    result = body(response)  # the upload redirects to the result page, with the warning as a message and a banner
    assert response.redirect_chain[-1][0] == reverse("results:detail", args=[prediction.pk])
    assert result.count(scan.input_warning) == 2 and 'data-testid="input-warning"' in result
    case_page = body(clinician_client.get(reverse("cases:detail", args=[case.pk])))
    assert 'data-testid="scan-input-warning"' in case_page and scan.input_warning in case_page
    # A head CT in a brain window: no warning anywhere.
    clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": ContentFile(head_png(), name="h.png")})
    plain = Scan.objects.exclude(pk=scan.pk).get()
    assert plain.details["input_check"]["verdict"] == "ok" and plain.input_warning == ""
    page = body(clinician_client.get(reverse("results:detail", args=[plain.predictions.get().pk])))
    assert 'data-testid="input-warning"' not in page
    # The audit list marks it, and filters on it.
    audit = body(org_admin_client.get(reverse("audit:predictions")))
    assert audit.count('data-testid="input-warning-tag"') == 1 and f'title="{scan.input_warning}"' in audit
    unusual = body(org_admin_client.get(reverse("audit:predictions"), {"input_check": "warn"}))
    assert reverse("results:detail", args=[prediction.pk]) in unusual
    assert reverse("results:detail", args=[plain.predictions.get().pk]) not in unusual


@pytest.mark.django_db
def test_upload_by_xhr_answers_json(clinician_client, case, active_model):
    url = reverse("cases:upload", args=[case.pk])
    headers = {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"}
    response = clinician_client.post(url, {"files": ContentFile(head_png(), name="a.png")}, headers=headers)
    assert response.status_code == 201
    assert response.json()["redirect"] == reverse("results:detail", args=[Prediction.objects.get().pk])
    refused = clinician_client.post(url, {"files": ContentFile(b"plain text", name="b.png")}, headers=headers)
    assert refused.status_code == 415 and "not a supported file" in refused.json()["error"]
    assert Scan.objects.count() == 1


BAD_UPLOADS = {
    "non-image": (
        lambda: [ContentFile(b"Hello, I am a text file.\n" * 10, name="notes.png")],
        415,
        "is not a supported file",
    ),
    "corrupt-png": (
        lambda: [ContentFile(png_bytes()[:60] + b"\x00" * 40, name="broken.png")],
        400,
        "is not a valid PNG image",
    ),
    "non-ct-dicom": (lambda: [ContentFile(mr_dicom(), name="mr.dcm")], 415, "is MR (not CT)"),
    "empty": (lambda: [ContentFile(b"", name="empty.dcm")], 400, "empty"),
    "no-file": (lambda: [], 400, "No file was uploaded"),
    "zip-traversal": (
        lambda: [ContentFile(zip_bytes({"../../evil.png": head_png()}), name="series.zip")],
        400,
        "unsafe path",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(BAD_UPLOADS))
def test_bad_upload_shows_the_message_answers_4xx_and_stores_nothing(
    kind, clinician_client, case, active_model, private_files
):
    make_files, status, message = BAD_UPLOADS[kind]
    before = private_files()
    response = clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": make_files()})
    assert response.status_code == status
    page = body(response)
    assert message in page
    assert 'class="alert alert--error"' in page and "Upload a scan" in page  # shown on the form
    assert Scan.objects.count() == 0 and Slice.objects.count() == 0 and Prediction.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.SCAN_UPLOAD).exists()
    assert private_files() == before


@pytest.mark.django_db
@override_settings(HEMO_MAX_UPLOAD_MB=1)
def test_upload_over_the_size_limit_is_413(clinician_client, case, active_model, private_files):
    before = private_files()
    big = ContentFile(b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024 + 10), name="big.png")
    response = clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": big})
    assert response.status_code == 413
    assert "the limit is 1 MB" in body(response)
    assert Scan.objects.count() == 0 and private_files() == before


@pytest.mark.django_db
@override_settings(HEMO_MAX_UPLOAD_MB=1)
def test_upload_far_over_the_limit_is_refused_from_its_length(clinician_client, case, active_model, private_files):
    """3 MB against a 1 MB limit: refused from Content-Length before the body is read, on a page that says why and
    leads back to the form; nothing stored."""
    before = private_files()
    big = ContentFile(b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024), name="big.png")
    url = reverse("cases:upload", args=[case.pk])
    response = clinician_client.post(url, {"files": big})
    assert response.status_code == 413
    text = body(response)
    assert "Upload too large" in text and "the limit is 1 MB" in text and "Nothing was stored" in text
    back = reverse("cases:detail", args=[case.pk])  # the upload URL takes POSTs only
    assert f'href="{back}"' in text and clinician_client.get(back).status_code == 200
    assert Scan.objects.count() == 0 and private_files() == before


@pytest.mark.django_db
def test_upload_without_an_active_model_stores_nothing(clinician_client, case, private_files, settings, tmp_path):
    settings.HEMO_MODEL_DIR = tmp_path / "no-model"
    before = private_files()
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(head_png(), name="head.png")}
    )
    assert response.status_code == 503 and "No model is active" in body(response)
    assert Scan.objects.count() == 0 and private_files() == before


@pytest.mark.django_db
def test_status_endpoints_are_json_and_not_cached(clinician_client, finished_prediction):
    response = clinician_client.get(reverse("results:status", args=[finished_prediction.pk]))
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert json.loads(response.content)["pending"] is False


@pytest.mark.django_db
def test_error_pages_and_account_pages_use_the_site_design(clinician_client, clinician):
    from django.template.loader import render_to_string

    forbidden = clinician_client.get(reverse("audit:events"))
    assert forbidden.status_code == 403 and "Not allowed" in body(forbidden) and "auditors" in body(forbidden)
    missing = clinician_client.get(f"/cases/{uuid.uuid4()}/")
    assert missing.status_code == 404 and "Not found" in body(missing) and "css/hemo.css" in body(missing)
    assert "Something went wrong" in render_to_string("500.html")
    change = clinician_client.get(reverse("account_change_password"))
    assert change.status_code == 200 and "css/hemo.css" in body(change) and 'class="btn btn--primary"' in body(change)
    assert clinician.username in body(change) and clinician.organization.name in body(change)


def test_probabilities_are_never_rounded_to_certainty():
    from scans.templatetags.hemo_ui import pct

    assert pct(0.99996) == "> 99.9 %" and pct(0.00002) == "< 0.1 %"
    assert pct(0.2439) == "24.4 %" and pct(1.0) == "100.0 %" and pct(0.0) == "0.0 %" and pct(None) == ""


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_hostile_or_broken_upload_is_a_clean_4xx_and_stores_nothing(
    kind, clinician_client, case, active_model, private_files, settings
):
    make_files, code, words, overrides = BAD_INPUTS[kind]
    for name, value in overrides.items():
        setattr(settings, name, value)
    before = private_files()
    files = [ContentFile(data, name=name) for name, data in make_files()]
    response = clinician_client.post(reverse("cases:upload", args=[case.pk]), {"files": files})
    assert response.status_code == page_status(code)
    assert 400 <= response.status_code < 500
    assert words in body(response) and 'class="alert alert--error"' in body(response)
    assert Scan.objects.count() == 0 and Slice.objects.count() == 0 and Prediction.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.SCAN_UPLOAD).exists()
    assert private_files() == before


@pytest.mark.django_db
def test_zip_upload_reports_the_files_it_skipped(clinician_client, case, active_model):
    archive = zip_bytes({**series(2), "series/LICENSE": b"MIT License\n", "series/meta.json": b"{}"})
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]), {"files": ContentFile(archive, name="series.zip")}, follow=True
    )
    assert response.status_code == 200
    scan = Scan.objects.get()
    assert scan.slice_count == 2 and scan.details["skipped_files"] == ["LICENSE", "meta.json"]
    assert "Skipped 2 file(s) of the ZIP that are not DICOM or PNG/JPEG images: LICENSE, meta.json." in body(response)


@pytest.mark.django_db
def test_audit_filters_cover_token_events_and_wrong_filters_show_no_rows(org_admin, org_admin_client, clinician):
    from accounts.api.services import api_token_rotate

    api_token_rotate(user=clinician)
    url = reverse("audit:events")
    page = body(org_admin_client.get(url, {"action": AuditAction.TOKEN_CREATE.value}))
    assert '<span class="tag tag--muted">auth.token_create</span>' in page and "Select a valid choice" not in page
    wrong = body(org_admin_client.get(url, {"action": "no.such.action", "actor": str(clinician.pk)}))
    assert "Select a valid choice" in wrong and "No audit event matches" in wrong
    assert "auth.token_create</span>" not in wrong  # not the whole trail as if it matched
    assert "No prediction matches" in body(org_admin_client.get(reverse("audit:predictions"), {"status": "lost"}))
    # A target's full id is one click away: the link filters the trail to it.
    assert f'href="?target={clinician.pk}"' in body(org_admin_client.get(url))


@pytest.mark.django_db
def test_chart_columns_are_clickable_over_their_whole_height(clinician_client, finished_prediction):
    from inference.pages import CHART_BOTTOM, CHART_HEIGHT, CHART_TOP

    page = body(clinician_client.get(reverse("results:detail", args=[finished_prediction.pk])))
    assert f'height="{CHART_HEIGHT - CHART_TOP - CHART_BOTTOM}" class="chart__hit"' in page


@pytest.mark.django_db
@override_settings(HEMO_MAX_UPLOAD_MB=1)
def test_upload_far_over_the_limit_from_the_page_script_gets_its_message_as_json(
    clinician_client, case, active_model, private_files
):
    before = private_files()
    big = ContentFile(b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024), name="big.png")
    response = clinician_client.post(
        reverse("cases:upload", args=[case.pk]),
        {"files": big},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert "the limit is 1 MB" in response.json()["error"]
    assert Scan.objects.count() == 0 and private_files() == before
    page = body(clinician_client.get(reverse("cases:detail", args=[case.pk])))
    assert f'data-max-bytes="{1024 * 1024}"' in page  # the script refuses before sending


@pytest.mark.django_db
def test_a_retry_is_shown_as_the_new_request_of_whoever_asked(
    clinician, org_admin, org_admin_client, finished_prediction, auditor_client
):
    Prediction.objects.filter(pk=finished_prediction.pk).update(status=PredictionStatus.FAILED, error_message="x")
    first = Prediction.objects.get(pk=finished_prediction.pk)
    assert first.requested_by == clinician and abs((first.requested - first.created).total_seconds()) < 1
    assert org_admin_client.post(reverse("results:request", args=[first.scan_id])).status_code == 302
    retried = Prediction.objects.get(pk=first.pk)
    assert retried.status == PredictionStatus.QUEUED and retried.requested_by == org_admin
    assert retried.requested > first.requested and retried.created == first.created
    page = body(auditor_client.get(reverse("results:detail", args=[first.pk])))
    assert f'datetime="{retried.requested.isoformat()}"' in page and f"by {org_admin.username}" in page


@pytest.mark.django_db
def test_dashboard_polls_while_a_listed_case_is_pending(clinician_client, finished_prediction):
    url = reverse("cases:dashboard")
    assert "data-poll-url" not in body(clinician_client.get(url))  # nothing pending: no polling
    Prediction.objects.filter(pk=finished_prediction.pk).update(status=PredictionStatus.RUNNING)
    page = body(clinician_client.get(url, {"q": "HOSP"}))
    assert f'data-poll-url="{url}?q=HOSP"' in page and '<meta http-equiv="refresh"' in page
    running = clinician_client.get(url, {"q": "HOSP"}, HTTP_ACCEPT="application/json").json()
    assert running["pending"] is True and running["state"].endswith(":running")
    Prediction.objects.filter(pk=finished_prediction.pk).update(status=PredictionStatus.SUCCEEDED)
    done = clinician_client.get(url, {"q": "HOSP"}, HTTP_ACCEPT="application/json").json()
    assert done["pending"] is False and done["state"] != running["state"]


@pytest.mark.django_db
def test_more_files_than_django_reads_is_a_413_that_says_so(clinician_client, case, active_model, settings):
    """Django refuses the form while the CSRF check reads it, before the view: it was a bare 400 page."""
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    files = [ContentFile(head_png(), name=f"s{i}.png") for i in range(4)]
    url = reverse("cases:upload", args=[case.pk])
    page = clinician_client.post(url, {"files": files})
    assert page.status_code == 413 and "more than 3 files" in body(page) and "Upload too large" in body(page)
    files = [ContentFile(head_png(), name=f"s{i}.png") for i in range(4)]
    script = clinician_client.post(url, {"files": files}, HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert script.status_code == 413 and "more than 3 files" in script.json()["error"]
    assert Scan.objects.count() == 0
