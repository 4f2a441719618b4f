"""Model versions, prediction requests, the prediction task (twice: idempotent) and the real-worker path."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import AuditAction, AuditEvent
from hemoplatform.celery import route_task
from inference.models import HeatMap, ModelVersion, Prediction, PredictionStatus
from inference.predictor import clear_predictors
from inference.services import (
    ModelUnavailable,
    model_version_get_active,
    model_version_register,
    prediction_request,
    prediction_run,
    scan_submit,
)
from inference.tasks import run_prediction
from scans.models import Scan
from scans.services import IngestError, scan_ingest
from tests.conftest import wait_for


def test_register_model_command_is_idempotent_and_copies(db, fake_model_dir, settings, capsys):
    call_command("register_model", str(fake_model_dir), "--activate")
    call_command("register_model", str(fake_model_dir), "--activate")
    version = ModelVersion.objects.get()
    assert version.is_active and version.threshold == 0.42 and version.version == "0.0.1"
    assert version.metrics == {"auc": 0.5}
    assert str(version.directory).startswith(str(settings.HEMO_MODEL_STORE_DIR))
    assert (version.directory / "model.pt").read_bytes() == (fake_model_dir / "model.pt").read_bytes()
    assert "already registered" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action=AuditAction.MODEL_REGISTER).count() == 1


def test_only_one_version_is_active(db, fake_model_dir, tmp_path):
    first, _ = model_version_register(path=fake_model_dir, activate=True)
    (fake_model_dir / "model.pt").write_bytes(b"other weights")
    second, created = model_version_register(path=fake_model_dir, activate=True)
    assert created
    first.refresh_from_db()
    assert not first.is_active and second.is_active
    assert model_version_get_active() == second


def test_a_recalibrated_card_on_the_same_weights_is_a_new_version(db, fake_model_dir):
    import json

    first, _ = model_version_register(path=fake_model_dir, activate=True)
    again, created = model_version_register(path=fake_model_dir)
    assert again == first and not created
    card = json.loads((fake_model_dir / "metadata.json").read_text())
    card.update(threshold=0.61, version="0.0.1-recalibrated")
    (fake_model_dir / "metadata.json").write_text(json.dumps(card))
    second, created = model_version_register(path=fake_model_dir, activate=True)
    assert created and second.threshold == 0.61 and second.sha256 != first.sha256
    assert (second.directory / "model.pt").read_bytes() == (first.directory / "model.pt").read_bytes()


def test_default_model_is_registered_on_first_use_or_refused_clearly(db, settings, fake_model_dir, tmp_path):
    settings.HEMO_MODEL_DIR = tmp_path / "nothing-here"
    with pytest.raises(ModelUnavailable, match="register_model"):
        model_version_get_active()
    settings.HEMO_MODEL_DIR = fake_model_dir
    assert model_version_get_active().is_active


def test_prediction_queue_follows_the_setting(settings):
    assert route_task("inference.tasks.run_prediction", (), {}, {}) == {"queue": "cpu"}
    settings.HEMO_PREDICTION_QUEUE = "gpu"
    assert route_task("inference.tasks.run_prediction", (), {}, {}) == {"queue": "gpu"}
    assert run_prediction.acks_late and run_prediction.reject_on_worker_lost
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 10**9) > run_prediction.time_limit


def test_prediction_request_is_idempotent_and_enqueues_on_commit(
    case, clinician, head_ct_png, upload, fake_model_dir, django_capture_on_commit_callbacks
):
    version, _ = model_version_register(path=fake_model_dir, activate=True)
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = prediction_request(scan=scan, user=clinician)
        second = prediction_request(scan=scan, user=clinician)
    assert first.pk == second.pk and Prediction.objects.count() == 1
    assert first.model_version == version and first.status == PredictionStatus.QUEUED and first.threshold == 0.42
    assert len(callbacks) == 2  # queued again: duplicates are harmless, lost messages are not
    assert AuditEvent.objects.filter(action=AuditAction.PREDICTION_REQUEST).count() == 1


def test_auditor_may_not_request_predictions(case, clinician, auditor, head_ct_png, upload, fake_model_dir):
    from django.core.exceptions import PermissionDenied

    model_version_register(path=fake_model_dir, activate=True)
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    with pytest.raises(PermissionDenied):
        prediction_request(scan=scan, user=auditor)


def test_changed_weights_fail_the_prediction_with_a_message(case, clinician, head_ct_png, upload, fake_model_dir):
    version, _ = model_version_register(path=fake_model_dir, activate=True, copy=False)
    (fake_model_dir / "model.pt").write_bytes(b"tampered")
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    prediction = prediction_request(scan=scan, user=clinician)
    clear_predictors()
    result = prediction_run(prediction_id=prediction.pk)
    assert result.status == PredictionStatus.FAILED
    assert "do not match model version" in result.error_message
    assert AuditEvent.objects.filter(action=AuditAction.PREDICTION_FAIL, target_id=str(prediction.pk)).exists()
    # Asking again retries a failed prediction.
    assert prediction_request(scan=scan, user=clinician).status == PredictionStatus.QUEUED


def test_scan_submit_refusal_stores_nothing(case, clinician, fake_model_dir, upload, private_files):
    model_version_register(path=fake_model_dir, activate=True)
    before = private_files()
    with pytest.raises(IngestError):
        scan_submit(case=case, user=clinician, files=[upload(b"not an image", name="x.png")])
    assert not Scan.objects.exists() and not Prediction.objects.exists() and private_files() == before


def test_task_run_twice_stores_one_result(case, clinician, head_ct_png, upload, model_version):
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    prediction = prediction_request(scan=scan, user=clinician)
    assert run_prediction(prediction_id=str(prediction.pk)) == PredictionStatus.SUCCEEDED
    assert run_prediction(prediction_id=str(prediction.pk)) == PredictionStatus.SUCCEEDED
    prediction.refresh_from_db()
    assert prediction.attempts == 1
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.label == (prediction.probability >= prediction.threshold)
    assert len(prediction.slice_probabilities) == 1
    assert HeatMap.objects.filter(prediction=prediction).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.PREDICTION_SUCCEED, target_id=str(prediction.pk)).count() == 1


@pytest.mark.slow
def test_end_to_end_with_a_real_worker(
    transactional_db,
    celery_worker,
    clinician,
    head_ct_png,
    upload,
    model_version,
    clinician_client,
    other_clinician_client,
):
    from django.urls import reverse

    from scans.services import case_create

    case = case_create(user=clinician, patient_ref="E2E-001")
    scan, prediction = scan_submit(case=case, user=clinician, files=[upload(head_ct_png)])

    def finished() -> bool:
        prediction.refresh_from_db()
        return prediction.is_finished

    assert wait_for(finished, timeout=180), f"prediction still {prediction.status}"
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error_message
    assert 0.0 <= prediction.probability <= 1.0
    assert prediction.worker_host and prediction.timings["total"] > 0
    heatmap = prediction.heatmaps.get()
    url = reverse("inference:heatmap", args=[prediction.pk, 0])
    response = clinician_client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert other_clinician_client.get(url).status_code == 404
    assert heatmap.image.size > 0


@pytest.mark.slow
def test_real_worker_records_a_failure(transactional_db, celery_worker, clinician, head_ct_png, upload, fake_model_dir):
    # Needs no trained model: the worker takes the job from the broker, finds the weights do not match the
    # registered checksum and records the failure on the row.
    from scans.services import case_create

    model_version_register(path=fake_model_dir, activate=True, copy=False)
    (fake_model_dir / "model.pt").write_bytes(b"tampered")
    case = case_create(user=clinician, patient_ref="E2E-002")
    _, prediction = scan_submit(case=case, user=clinician, files=[upload(head_ct_png)])

    def finished() -> bool:
        prediction.refresh_from_db()
        return prediction.is_finished

    assert wait_for(finished, timeout=60), f"prediction still {prediction.status}"
    assert prediction.status == PredictionStatus.FAILED
    assert "do not match model version" in prediction.error_message
    assert prediction.worker_host


def test_dicom_series_prediction_in_slice_order(case, clinician, ge_series_paths, upload, model_version):
    scan = scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    prediction = prediction_request(scan=scan, user=clinician)
    prediction = prediction_run(prediction_id=prediction.pk)
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error_message
    assert len(prediction.slice_probabilities) == 28
    assert all(0.0 <= p <= 1.0 for p in prediction.slice_probabilities)
    heatmaps = list(prediction.heatmaps.select_related("slice"))
    assert [h.index for h in heatmaps] == list(range(28))
    assert all(h.slice.index == h.index for h in heatmaps)


def test_running_prediction_is_left_alone_unless_stale(
    case, clinician, head_ct_png, upload, fake_model_dir, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from inference.services import prediction_requeue_stale

    model_version_register(path=fake_model_dir, activate=True)
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    prediction = prediction_request(scan=scan, user=clinician)
    Prediction.objects.filter(pk=prediction.pk).update(
        status=PredictionStatus.RUNNING, started=timezone.now(), attempts=1
    )
    assert prediction_run(prediction_id=prediction.pk).attempts == 1  # a live run elsewhere: untouched
    with django_capture_on_commit_callbacks(execute=False):
        assert prediction_requeue_stale() == []
    long_ago = timezone.now() - timedelta(seconds=settings.HEMO_PREDICTION_STALE_AFTER_S + 5)
    Prediction.objects.filter(pk=prediction.pk).update(started=long_ago)
    assert prediction_requeue_stale() == [prediction.pk]
    taken_over = prediction_run(prediction_id=prediction.pk)
    assert taken_over.attempts == 2 and taken_over.is_finished  # the dead worker's job was taken over


def test_a_prediction_whose_worker_keeps_dying_fails_after_max_attempts(case, clinician, fake_model_dir, settings):
    from datetime import timedelta

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from tests.api.conftest import make_png

    settings.HEMO_PREDICTION_MAX_ATTEMPTS = 2
    model_version_register(path=fake_model_dir, activate=True)
    scan = scan_ingest(case=case, user=clinician, files=[SimpleUploadedFile("s.png", make_png())])
    prediction = prediction_request(scan=scan, user=clinician)
    long_ago = timezone.now() - timedelta(seconds=settings.HEMO_PREDICTION_STALE_AFTER_S + 5)

    def worker_died_during(attempt: int) -> None:
        # What a worker killed mid-run (out of memory, a segfault in a native library) leaves behind: the row
        # running since before the hard time limit; the broker redelivers the message (acks_late).
        Prediction.objects.filter(pk=prediction.pk).update(
            status=PredictionStatus.RUNNING, started=long_ago, attempts=attempt
        )

    def starts() -> int:
        return AuditEvent.objects.filter(action=AuditAction.PREDICTION_START, target_id=str(prediction.pk)).count()

    worker_died_during(1)
    run_prediction(prediction_id=str(prediction.pk))  # below the cap: taken over, a second run
    prediction.refresh_from_db()
    assert prediction.attempts == 2 and starts() == 1 and "Stopped after" not in prediction.error_message
    worker_died_during(2)
    for _ in range(2):  # the redelivered message, then the stale check the task schedules: both find it failed
        assert run_prediction(prediction_id=str(prediction.pk)) == PredictionStatus.FAILED
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.FAILED and prediction.attempts == 2 and starts() == 1
    assert prediction.error_message.startswith("Stopped after 2 attempts that did not finish")
    assert prediction.finished is not None
    failures = AuditEvent.objects.filter(action=AuditAction.PREDICTION_FAIL, target_id=str(prediction.pk))
    assert failures.filter(details__error__startswith="Stopped after 2 attempts").count() == 1
    assert failures.get(details__error__startswith="Stopped").organization == case.organization
    # Asking again is a fresh start with the full number of attempts.
    retried = prediction_request(scan=scan, user=clinician)
    assert retried.status == PredictionStatus.QUEUED and retried.attempts == 0
    assert prediction_run(prediction_id=prediction.pk).attempts == 1 and starts() == 2


def test_web_process_does_not_import_torch():
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import django, sys; django.setup(); import hemoplatform.urls, inference.services, inference.tasks, "
        "scans.services, inference.admin; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_thin_dicom_series_is_read_as_five_mm_slabs_and_says_so(
    case, clinician, clinician_client, upload, model_version
):
    """A series of 1 mm slices (the model learnt 5 mm ones) is read as 5 mm slabs: every slice keeps a probability
    and a heat map (its slab's), and the prediction, its audit row, the result page and the API say how it was read."""
    from tests.bad_uploads import ct_dicom

    files = [upload(ct_dicom(instance=i, size=64), f"thin/{i:02d}.dcm") for i in range(1, 16)]  # 1 mm apart
    scan = scan_ingest(case=case, user=clinician, files=files)
    prediction = prediction_run(prediction_id=prediction_request(scan=scan, user=clinician).pk)
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error_message
    assert prediction.slab_reading == {
        "slab_mm": 5.0,
        "spacing_mm": 1.0,
        "slices_per_slab": 5,
        "averaged_per_slab": 5,
        "thickness_mm": None,
        "overlap": False,
        "slabs": 3,
        "slices": 15,
    }
    probabilities = prediction.slice_probabilities
    assert len(probabilities) == 15 and [len(set(probabilities[k : k + 5])) for k in (0, 5, 10)] == [1, 1, 1]
    heatmaps = list(prediction.heatmaps.order_by("index"))
    assert [h.index for h in heatmaps] == list(range(15))
    assert [h.probability for h in heatmaps] == pytest.approx(probabilities)
    overlays = [h.image.read() for h in heatmaps]
    assert [len(set(overlays[k : k + 5])) for k in (0, 5, 10)] == [1, 1, 1] and len(set(overlays)) == 3
    event = AuditEvent.objects.get(action=AuditAction.PREDICTION_SUCCEED, target_id=str(prediction.pk))
    assert event.details["slabs"] == 3
    from django.urls import reverse

    page = clinician_client.get(reverse("results:detail", args=[prediction.pk])).content.decode()
    assert "3 slabs of up to 5 mm" in page and "the 15 slices are 1 mm apart (5 per slab, averaged in HU)" in page
    api = clinician_client.get(reverse("api:prediction-detail", args=[prediction.pk])).json()
    assert api["slab_reading"]["slabs"] == 3 and len(api["slice_probabilities"]) == 15


def test_series_at_five_mm_is_read_slice_by_slice(case, clinician, upload, model_version):
    from tests.bad_uploads import ct_dicom

    files = [
        upload(ct_dicom(instance=i, size=64, ImagePositionPatient=[0, 0, 5.0 * i]), f"s/{i}.dcm") for i in range(1, 5)
    ]
    scan = scan_ingest(case=case, user=clinician, files=files)
    prediction = prediction_run(prediction_id=prediction_request(scan=scan, user=clinician).pk)
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error_message
    assert prediction.slab_reading == {} and len(set(prediction.slice_probabilities)) > 1


def test_a_short_thin_series_read_as_one_slab_shows_its_result(
    case, clinician, clinician_client, upload, model_version
):
    """Three 1 mm slices are one slab (smaller than 5 mm), judged like one image; the page says so (it once failed
    to render: the description took the short slab for overlapping slices without a thickness)."""
    from django.urls import reverse

    from tests.bad_uploads import ct_dicom

    files = [upload(ct_dicom(instance=i, size=64), f"short/{i}.dcm") for i in range(1, 4)]
    scan = scan_ingest(case=case, user=clinician, files=files)
    prediction = prediction_run(prediction_id=prediction_request(scan=scan, user=clinician).pk)
    assert prediction.status == PredictionStatus.SUCCEEDED, prediction.error_message
    assert prediction.slab_reading["slabs"] == 1 and not prediction.slab_reading["overlap"]
    assert prediction.threshold == pytest.approx(prediction.model_version.card["threshold"])
    response = clinician_client.get(reverse("results:detail", args=[prediction.pk]))
    assert response.status_code == 200
    assert "A single slab is judged like a single image" in response.content.decode()


# --- the pipeline under failures (a review with reproductions) -----------------------------------------------------


def _fake_prediction(case, clinician, fake_model_dir):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.api.conftest import make_png

    model_version_register(path=fake_model_dir, activate=True)
    scan = scan_ingest(case=case, user=clinician, files=[SimpleUploadedFile("s.png", make_png())])
    return prediction_request(scan=scan, user=clinician)


def test_a_task_delivered_again_takes_its_own_running_row_over_at_once(case, clinician, fake_model_dir):
    """A worker child killed mid-run (out of memory) leaves the row running; the broker delivers the same task again
    (acks_late). It used to find "running, not stale" and leave the clinician waiting ~17 minutes."""
    from django.utils import timezone

    prediction = _fake_prediction(case, clinician, fake_model_dir)
    Prediction.objects.filter(pk=prediction.pk).update(
        status=PredictionStatus.RUNNING, started=timezone.now(), attempts=1, task_id="task-a"
    )
    other = prediction_run(prediction_id=prediction.pk, task_id="task-b")  # another task: a live run, untouched
    assert other.status == PredictionStatus.RUNNING and other.attempts == 1
    again = prediction_run(prediction_id=prediction.pk, task_id="task-a")
    assert again.attempts == 2 and again.is_finished and again.task_id == "task-a"


def test_storing_a_result_rides_out_a_short_database_outage(case, clinician, fake_model_dir, settings):
    from django.db import InterfaceError, OperationalError

    from inference.services import _store_with_retries

    prediction = _fake_prediction(case, clinician, fake_model_dir)
    outcomes = [OperationalError("server closed the connection"), InterfaceError("connection already closed")]

    def store():
        if outcomes:
            raise outcomes.pop(0)
        return prediction

    assert _store_with_retries(store, prediction_id=prediction.pk, attempt=1) == prediction and not outcomes


def test_a_longer_outage_puts_the_row_back_in_the_queue_audited(case, clinician, fake_model_dir, settings):
    from django.db import OperationalError
    from django.utils import timezone

    from inference.services import _store_with_retries

    settings.HEMO_STORE_RETRY_S = 1
    prediction = _fake_prediction(case, clinician, fake_model_dir)
    Prediction.objects.filter(pk=prediction.pk).update(
        status=PredictionStatus.RUNNING, started=timezone.now(), attempts=1
    )

    def store():
        raise OperationalError('could not connect to "/var/run/postgresql/.s.PGSQL.5432"')

    with pytest.raises(OperationalError):
        _store_with_retries(store, prediction_id=prediction.pk, attempt=1)
    prediction.refresh_from_db()
    assert prediction.status == PredictionStatus.QUEUED and prediction.started is None
    release = AuditEvent.objects.get(action=AuditAction.PREDICTION_RELEASE, target_id=str(prediction.pk))
    assert release.organization == case.organization and release.details["attempt"] == 1
    assert "/var/run" not in release.details["reason"] and "[path]" in release.details["reason"]


def test_a_failure_tells_the_clinician_what_happened_without_server_paths(
    case, clinician, head_ct_png, upload, model_version, settings
):
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    stored = scan.slices.get().file
    stored.storage.delete(stored.name)  # the storage lost the file
    prediction = prediction_run(prediction_id=prediction_request(scan=scan, user=clinician).pk)
    assert prediction.status == PredictionStatus.FAILED
    assert prediction.error_message.startswith("A stored file of this scan could not be read")
    assert str(settings.MEDIA_ROOT) not in prediction.error_message and "/" not in prediction.error_message


def test_restarts_leave_a_version_staff_activated_active(db, fake_model_dir, tmp_path, make_user):
    import shutil

    from inference.services import model_version_activate

    call_command("register_model", str(fake_model_dir), "--activate", "--unless-chosen")
    shipped = ModelVersion.objects.get(is_active=True)
    other_dir = tmp_path / "other"
    shutil.copytree(fake_model_dir, other_dir)
    (other_dir / "model.pt").write_bytes(b"other weights")
    other, _ = model_version_register(path=other_dir)
    staff = make_user(role="admin", username="staff-1")
    model_version_activate(model_version=other, actor=staff)  # an admin's choice in the Django admin
    call_command("register_model", str(fake_model_dir), "--activate", "--unless-chosen")  # a restart
    assert ModelVersion.objects.get(is_active=True) == other
    call_command("register_model", str(fake_model_dir), "--activate")  # staff serve the shipped one by hand
    call_command("register_model", str(other_dir), "--activate")  # ... and then the other one, by hand
    call_command("register_model", str(fake_model_dir), "--activate", "--unless-chosen")  # a restart
    assert ModelVersion.objects.get(is_active=True) == other
    model_version_activate(model_version=other, by_startup=True)  # a start-up script's activation
    call_command("register_model", str(fake_model_dir), "--activate", "--unless-chosen")  # may be replaced
    assert ModelVersion.objects.get(is_active=True) == shipped


def test_the_sweep_sends_a_queued_prediction_once_per_interval(
    case, clinician, fake_model_dir, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from inference.services import prediction_requeue_stale

    prediction = _fake_prediction(case, clinician, fake_model_dir)
    Prediction.objects.filter(pk=prediction.pk).update(modified=timezone.now() - timedelta(seconds=700))
    assert prediction_requeue_stale(queued_for_s=600) == [prediction.pk]
    assert prediction_requeue_stale(queued_for_s=600) == []  # the next sweep: already sent, not again


def test_worker_children_import_the_model_code_when_they_start():
    """Outside any task's time limit: a soft limit that interrupted torch's first import broke that child."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import django, sys; django.setup(); import hemoplatform.celery; "
        "from celery.signals import worker_process_init; assert 'torch' not in sys.modules; "
        "worker_process_init.send(sender=None); print('torch' in sys.modules, 'ml.predict' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True"


def test_an_upload_is_read_and_decoded_before_any_transaction_opens(transactional_db, case, clinician, fake_model_dir):
    """A long series decoded inside the transaction held it open for seconds (on SQLite, the database-wide write
    lock: concurrent uploads, sign-ins and the worker's saves waited, or failed as "database is locked")."""
    import io

    from django.db import connection

    from tests.api.conftest import make_png

    model_version_register(path=fake_model_dir, activate=True)
    in_transaction_while_read: list[bool] = []

    class WatchedUpload(io.BytesIO):
        name, size = "s.png", 0

        def read(self, *args):
            in_transaction_while_read.append(connection.in_atomic_block)
            return super().read(*args)

    upload = WatchedUpload(make_png())
    upload.size = len(upload.getvalue())
    scan, prediction = scan_submit(case=case, user=clinician, files=[upload])
    assert in_transaction_while_read and not any(in_transaction_while_read)
    assert scan.slices.count() == 1 and prediction.scan == scan
