"""Writes for model versions and predictions, and the upload-and-predict path pages and API share (``scan_submit``)."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, close_old_connections, transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import AuditAction, AuditEvent, User
from accounts.permissions import user_can_read_record, user_can_write_record
from accounts.services import record_audit_event
from inference.models import HeatMap, ModelVersion, Prediction, PredictionStatus
from inference.predictor import ModelArtifactError, artifact_sha256, get_predictor
from ml.dicom import DicomError
from scans.models import Case, Scan, private_storage
from scans.services import scan_files_delete, scan_store, scan_upload_prepare

logger = logging.getLogger(__name__)

ERROR_MESSAGE_MAX = 2000


class ModelUnavailable(RuntimeError):
    """No model version is active and none could be registered from HEMO_MODEL_DIR."""


# --- model versions ---------------------------------------------------------------------------------------------------


def _read_card(directory: Path) -> dict:
    card_path = directory / "metadata.json"
    if not (directory / "model.pt").is_file() or not card_path.is_file():
        raise FileNotFoundError(f"{directory} must hold model.pt and metadata.json.")
    with open(card_path, encoding="utf-8") as handle:
        return json.load(handle)


def _card_threshold(card: dict) -> float:
    for value in (card.get("threshold"), (card.get("metrics") or {}).get("threshold")):
        if isinstance(value, int | float):
            return float(value)
    return 0.5


@transaction.atomic
def model_version_register(
    *,
    path: str | Path,
    activate: bool = False,
    copy: bool = True,
    actor: User | None = None,
    unless_chosen: bool = False,
) -> tuple[ModelVersion, bool]:
    """Register the artifact folder ``path`` (model.pt + metadata.json); idempotent by the artifact's sha256 (weights
    and card: the same weights with a recalibrated card are a new version).

    ``activate`` with ``unless_chosen`` (what start-up scripts use): activate it unless a person chose the active
    version (staff activated it: `model_version_chosen_by_person`), so a restart never undoes that choice, while a
    newer shipped model still replaces the previous shipped one.

    With ``copy`` (default) the folder is copied into HEMO_MODEL_STORE_DIR so that retraining in place can never
    change a registered version; otherwise the folder is referenced where it is. Returns (version, created).
    """
    directory = Path(path).resolve()
    card = _read_card(directory)
    sha256 = artifact_sha256(directory)
    model_version = ModelVersion.objects.filter(sha256=sha256).first()
    created = model_version is None
    if created:
        name = str(card.get("name") or card.get("model_name") or "hemo-ich")
        version = str(card.get("version") or sha256[:12])
        stored = directory
        if copy:
            stored = settings.HEMO_MODEL_STORE_DIR / f"{slugify(name) or 'model'}-{slugify(version)}-{sha256[:12]}"
            if not (stored / "metadata.json").is_file() or artifact_sha256(stored) != sha256:
                stored.parent.mkdir(parents=True, exist_ok=True)
                # Copy beside the target, then rename: a half-copied folder never carries the final name.
                staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=stored.parent))
                shutil.copytree(directory, staging, dirs_exist_ok=True)
                shutil.rmtree(stored, ignore_errors=True)
                staging.rename(stored)
        model_version = ModelVersion.objects.create(
            name=name[:100],
            version=version[:50],
            sha256=sha256,
            threshold=_card_threshold(card),
            metrics=card.get("metrics") or {},
            card=card,
            path=str(stored),
        )
        record_audit_event(
            action=AuditAction.MODEL_REGISTER,
            actor=actor,
            target=model_version,
            details={"sha256": sha256, "source": str(directory)},
        )
    if activate and not model_version.is_active:
        active = ModelVersion.objects.filter(is_active=True).first()
        if not (unless_chosen and active is not None and model_version_chosen_by_person(model_version=active)):
            model_version_activate(model_version=model_version, actor=actor, by_startup=unless_chosen)
    return model_version, created


def model_version_chosen_by_person(*, model_version: ModelVersion) -> bool:
    """Whether the latest activation of ``model_version`` was a choice (staff in the admin, or `register_model
    --activate` run by hand), not a start-up script's (`--unless-chosen`, audited with ``startup``)."""
    event = (
        AuditEvent.objects.filter(action=AuditAction.MODEL_ACTIVATE, target_id=str(model_version.pk))
        .order_by("-id")
        .first()
    )
    return event is not None and not (event.details or {}).get("startup")


@transaction.atomic
def model_version_activate(
    *, model_version: ModelVersion, actor: User | None = None, by_startup: bool = False
) -> ModelVersion:
    """Make ``model_version`` the one new predictions use (exactly one is active). ``by_startup``: a start-up
    script did it, not a person's choice (a later start-up may replace it)."""
    ModelVersion.objects.filter(is_active=True).exclude(pk=model_version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=model_version.pk).update(is_active=True)
    model_version.is_active = True
    record_audit_event(
        action=AuditAction.MODEL_ACTIVATE,
        actor=actor,
        target=model_version,
        details={"startup": True} if by_startup else {},
    )
    return model_version


def model_version_get_active(*, register_default: bool = True) -> ModelVersion:
    """The active model version. When none is active and HEMO_MODEL_DIR holds a model, it is registered and
    activated first, so a fresh installation works without a manual step. Raises ModelUnavailable otherwise."""
    model_version = ModelVersion.objects.filter(is_active=True).first()
    if model_version is not None:
        return model_version
    default_dir = Path(settings.HEMO_MODEL_DIR)
    if register_default and (default_dir / "model.pt").is_file():
        try:
            model_version, _ = model_version_register(path=default_dir, activate=True)
            return model_version
        except IntegrityError:  # another process registered or activated it at the same moment
            model_version = ModelVersion.objects.filter(is_active=True).first()
            if model_version is not None:
                return model_version
    raise ModelUnavailable(
        "No model is active. An administrator must register one: "
        "`python manage.py register_model ml/models/default --activate`."
    )


# --- predictions ------------------------------------------------------------------------------------------------------


def _enqueue(prediction_id: uuid.UUID) -> None:
    from inference.tasks import run_prediction

    try:
        run_prediction.apply_async(kwargs={"prediction_id": str(prediction_id)})
    except Exception:  # the row stays queued; prediction_request on it again re-enqueues
        logger.exception("Could not enqueue prediction %s", prediction_id)


def prediction_request(
    *,
    scan: Scan,
    model_version: ModelVersion | None = None,
    user: User | None = None,
    request: HttpRequest | None = None,
) -> Prediction:
    """Get or create the prediction of ``scan`` by ``model_version`` (default: the active one) and enqueue it after
    the surrounding transaction commits.

    Idempotent: a queued prediction is enqueued again (the task ignores duplicates), a failed one is reset and
    retried, a running or succeeded one is returned as it is. ``user`` None means the system asked.
    """
    return prediction_get_or_request(scan=scan, model_version=model_version, user=user, request=request)[0]


def prediction_get_or_request(
    *,
    scan: Scan,
    model_version: ModelVersion | None = None,
    user: User | None = None,
    request: HttpRequest | None = None,
) -> tuple[Prediction, bool]:
    """`prediction_request`, and whether this call created the prediction: decided by the database's unique
    (scan, model version) row, so of two requests at the same moment exactly one is told it created it."""
    if user is not None and not user_can_write_record(user, scan.case.organization_id):
        raise PermissionDenied("You may not request predictions for this scan.")
    model_version = model_version or model_version_get_active()
    with transaction.atomic():
        prediction, created = Prediction.objects.get_or_create(
            scan=scan,
            model_version=model_version,
            defaults={"requested_by": user, "threshold": model_version.threshold},
        )
        retried = False
        if not created and prediction.status == PredictionStatus.FAILED:
            prediction = Prediction.objects.select_for_update().get(pk=prediction.pk)
            if prediction.status == PredictionStatus.FAILED:
                prediction.status = PredictionStatus.QUEUED
                prediction.error_message = ""
                prediction.started = prediction.finished = None
                prediction.attempts = 0  # a retry someone asked for gets HEMO_PREDICTION_MAX_ATTEMPTS runs again
                # The result page, the audit list and the queue wait speak of this request, not the first one.
                prediction.requested, prediction.requested_by = timezone.now(), user
                prediction.save(
                    update_fields=[
                        "status",
                        "error_message",
                        "started",
                        "finished",
                        "attempts",
                        "requested",
                        "requested_by",
                        "modified",
                    ]
                )
                retried = True
        if created or retried:
            record_audit_event(
                action=AuditAction.PREDICTION_REQUEST,
                actor=user,
                organization=scan.case.organization,
                target=prediction,
                request=request,
                details={"scan": str(scan.pk), "model_version": str(model_version), "retry": retried},
            )
        if prediction.status == PredictionStatus.QUEUED:
            transaction.on_commit(partial(_enqueue, prediction.pk))
    return prediction, created


def prediction_record_view(*, prediction: Prediction, user: User, request: HttpRequest | None = None) -> None:
    """Audit that a user read a result (the result page and the API's retrieve call it once the prediction has
    finished: a queued or running one, polled or reloaded, shows no result yet)."""
    if not user_can_read_record(user, prediction.scan.case.organization_id):
        raise PermissionDenied
    record_audit_event(
        action=AuditAction.PREDICTION_VIEW,
        actor=user,
        target=prediction,
        request=request,
        details={"case": str(prediction.scan.case_id), "status": prediction.status},
    )


def scan_submit(
    *,
    case: Case,
    user: User,
    files: Sequence[BinaryIO],
    model_version: ModelVersion | None = None,
    request: HttpRequest | None = None,
) -> tuple[Scan, Prediction]:
    """Upload and analyse in one step: what ``scan_ingest`` does, then ``prediction_request``; the rows of both in one
    transaction, opened only once the upload is read and decoded (``scan_upload_prepare``).

    Raises scans.services.IngestError for refused uploads and ModelUnavailable when no model is active (checked
    first, so nothing is stored then).
    """
    model_version = model_version or model_version_get_active()
    if not user_can_write_record(user, case.organization_id):
        raise PermissionDenied("You may not upload to this case.")
    # The slow part (reading, decoding, rendering) before the transaction: a 400-slice series held SQLite's write
    # lock for seconds, and concurrent uploads, sign-ins and the worker's saves waited on it or failed.
    upload = scan_upload_prepare(files=files)
    scan = None
    try:
        with transaction.atomic():
            scan = scan_store(case=case, user=user, upload=upload, request=request)
            prediction = prediction_request(scan=scan, model_version=model_version, user=user, request=request)
    except BaseException:
        if scan is not None:  # rows were rolled back; remove the files ingestion wrote
            scan_files_delete(scan=scan)
        raise
    return scan, prediction


def prediction_requeue_stale(*, queued_for_s: int = 600) -> list[uuid.UUID]:
    """Enqueue again predictions whose message may be lost: queued for longer than ``queued_for_s`` seconds (e.g.
    the broker was down when they were requested), or running past the hard time limit (the worker died).
    Safe to run at any time, from cron or beat (`manage.py requeue_predictions`): the task ignores duplicates."""
    now = timezone.now()
    queued = Prediction.objects.filter(
        status=PredictionStatus.QUEUED, modified__lt=now - timedelta(seconds=queued_for_s)
    )
    stale_running = Prediction.objects.filter(
        status=PredictionStatus.RUNNING,
        started__lt=now - timedelta(seconds=settings.HEMO_PREDICTION_STALE_AFTER_S),
    )
    ids = list(queued.values_list("pk", flat=True)) + list(stale_running.values_list("pk", flat=True))
    # Sent again now: the next sweeps wait another queued_for_s before sending it once more (they re-sent every
    # queued prediction on every sweep, a backlog of duplicates in front of new jobs while a worker was down).
    Prediction.objects.filter(pk__in=ids, status=PredictionStatus.QUEUED).update(modified=now)
    for prediction_id in ids:
        _enqueue(prediction_id)
    return ids


def _is_stale(prediction: Prediction, now) -> bool:
    # Past the hard time limit no worker can still be running it: the worker died and the message came back.
    return (
        prediction.started is None
        or (now - prediction.started).total_seconds() > settings.HEMO_PREDICTION_STALE_AFTER_S
    )


def _human_error(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The prediction took longer than {settings.HEMO_TASK_SOFT_TIME_LIMIT} s and was stopped."
    if isinstance(exc, ModelArtifactError | DicomError):  # ours, written for people
        return _scrubbed(str(exc))[:ERROR_MESSAGE_MAX]
    if isinstance(exc, OSError):
        return (
            "A stored file of this scan could not be read on the worker; an administrator must check the storage "
            "(the worker's log names the file)."
        )
    if isinstance(exc, MemoryError):
        return "The worker ran out of memory on this scan; an administrator can give the worker more memory."
    # Anything else is a fault of ours: the clinician learns that, the worker's log has the traceback.
    return f"The analysis failed with an internal error ({exc.__class__.__name__}); it is in the worker's log."


SERVER_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+[\w.-]*")


def _scrubbed(text: str) -> str:
    """``text`` without absolute server paths (a message shown to users or stored in the trail)."""
    return SERVER_PATH.sub("[path]", text)


def prediction_run(*, prediction_id: uuid.UUID | str, task_id: str = "") -> Prediction | None:
    """Run a queued prediction in this process (the worker's task calls it).

    Locks the row and returns early unless it is queued or a stale running one; marks it running, runs the
    predictor outside any transaction, then stores probabilities and heat-map overlays and marks it succeeded.
    Errors mark it failed with a message; transient database errors put it back to queued and re-raise (the task
    retries). After HEMO_PREDICTION_MAX_ATTEMPTS runs that never finished (the worker crashed or was killed, or the
    database went away) it is marked failed instead of being run again. Returns the prediction, or None when it no
    longer exists.

    ``task_id``: the Celery task running this. A running prediction is left alone unless it is stale, or it was
    marked running by this same task id: a task delivered again (its worker died, or it is retried after a database
    error) takes its own row over at once instead of waiting for it to turn stale.
    """
    now = timezone.now()
    with transaction.atomic():
        prediction = (
            Prediction.objects.select_for_update(of=("self",))
            .select_related("scan__case__organization", "model_version")
            .filter(pk=prediction_id)
            .first()
        )
        if prediction is None:
            logger.warning("Prediction %s no longer exists", prediction_id)
            return None
        redelivered = bool(task_id) and prediction.task_id == task_id
        if prediction.status == PredictionStatus.RUNNING and not _is_stale(prediction, now) and not redelivered:
            return prediction
        if prediction.status not in (PredictionStatus.QUEUED, PredictionStatus.RUNNING):
            return prediction
        if prediction.attempts >= settings.HEMO_PREDICTION_MAX_ATTEMPTS:
            return _prediction_mark_failed(
                prediction=prediction,
                message=f"Stopped after {prediction.attempts} attempts that did not finish: the worker crashed, was "
                "killed or lost the database each time. Ask for the prediction again to retry.",
            )
        prediction.status = PredictionStatus.RUNNING
        prediction.started = now
        prediction.worker_host = socket.gethostname()[:255]
        prediction.attempts += 1
        prediction.error_message = ""
        prediction.task_id = task_id[:255]
        prediction.save(
            update_fields=["status", "started", "worker_host", "attempts", "error_message", "task_id", "modified"]
        )
        record_audit_event(
            action=AuditAction.PREDICTION_START,
            organization=prediction.scan.case.organization,
            target=prediction,
            details={"attempt": prediction.attempts, "worker": prediction.worker_host},
        )
    attempt = prediction.attempts
    started = time.monotonic()
    try:
        slices = list(prediction.scan.slices.order_by("index"))
        predictor = get_predictor(prediction.model_version)
        sources = []
        for slice_ in slices:
            with slice_.file.open("rb") as handle:
                source = io.BytesIO(handle.read())
            source.name = Path(slice_.file.name).name  # messages name the file, never the storage layout
            sources.append(source)
        result = predictor.predict_sources(sources, heatmaps=True)
        overlays = _overlay_pngs(result)
    except (OperationalError, InterfaceError) as exc:
        _prediction_release(prediction_id=prediction.pk, attempt=attempt, reason=str(exc))
        raise
    except Exception as exc:  # the model, the files or the time limit: record it, do not retry
        logger.exception("Prediction %s failed", prediction.pk)
        message = _human_error(exc)
        return _store_with_retries(
            partial(_prediction_fail, prediction_id=prediction.pk, attempt=attempt, message=message),
            prediction_id=prediction.pk,
            attempt=attempt,
        )
    timings = {key: round(float(value), 4) for key, value in (result.timings or {}).items()}
    timings["total"] = round(time.monotonic() - started, 4)
    timings["queue_wait"] = round((now - prediction.requested).total_seconds(), 4)
    return _store_with_retries(
        partial(
            _prediction_succeed,
            prediction_id=prediction.pk,
            attempt=attempt,
            result=result,
            overlays=overlays,
            slices=slices,
            timings=timings,
        ),
        prediction_id=prediction.pk,
        attempt=attempt,
    )


def _store_with_retries(store: Callable[[], Prediction], *, prediction_id: uuid.UUID, attempt: int) -> Prediction:
    """Store a finished run's outcome, riding out a short database outage (a restart, a failover, a lock held on
    SQLite): the result is computed, so it is saved when the database is back instead of being thrown away with the
    row left running. Past HEMO_STORE_RETRY_S the row goes back to the queue and the error is raised (the task
    retries, and its redelivery takes the row over: ``task_id``)."""
    deadline = time.monotonic() + settings.HEMO_STORE_RETRY_S
    delay = 0.5
    while True:
        try:
            return store()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                _prediction_release(prediction_id=prediction_id, attempt=attempt, reason=str(exc))
                raise
            logger.warning("Storing prediction %s failed (%s); retrying in %.1f s", prediction_id, exc, delay)
            if not transaction.get_connection().in_atomic_block:
                close_old_connections()  # a broken connection is dropped; the next query opens a new one
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


def _overlay_pngs(result) -> list[bytes]:
    from ml.predict import overlay_heatmap

    pngs, rendered = [], {}
    for image, heatmap in zip(result.images, result.heatmaps, strict=False):
        key = (id(image), id(heatmap))  # the slices of a slab share its arrays (ml.slabs): rendered once
        if key not in rendered:
            buffer = io.BytesIO()
            overlay_heatmap(image, heatmap).save(buffer, format="PNG")
            rendered[key] = buffer.getvalue()
        pngs.append(rendered[key])
    return pngs


def _prediction_release(*, prediction_id: uuid.UUID, attempt: int, reason: str) -> None:
    """Back to the queue after a database error (audited: the trail shows every state a prediction passes)."""
    try:
        with transaction.atomic():
            prediction = (
                Prediction.objects.select_for_update(of=("self",))
                .select_related("scan__case__organization")
                .filter(pk=prediction_id, status=PredictionStatus.RUNNING, attempts=attempt)
                .first()
            )
            if prediction is None:
                return
            prediction.status, prediction.started = PredictionStatus.QUEUED, None
            prediction.save(update_fields=["status", "started", "modified"])
            record_audit_event(
                action=AuditAction.PREDICTION_RELEASE,
                organization=prediction.scan.case.organization,
                target=prediction,
                details={"attempt": attempt, "reason": _scrubbed(reason)[:300]},
            )
    except (OperationalError, InterfaceError):
        pass  # the database is still away; the redelivered task takes the row over (same task id)


def _prediction_fail(*, prediction_id: uuid.UUID, attempt: int, message: str) -> Prediction:
    with transaction.atomic():
        prediction = (
            Prediction.objects.select_for_update(of=("self",)).select_related("scan__case").get(pk=prediction_id)
        )
        if prediction.status != PredictionStatus.RUNNING or prediction.attempts != attempt:
            return prediction  # another worker took it over
        return _prediction_mark_failed(prediction=prediction, message=message)


def _prediction_mark_failed(*, prediction: Prediction, message: str) -> Prediction:
    # The caller holds the row's lock, in the transaction that this audit row joins.
    prediction.status = PredictionStatus.FAILED
    prediction.error_message = message
    prediction.finished = timezone.now()
    prediction.save(update_fields=["status", "error_message", "finished", "modified"])
    record_audit_event(
        action=AuditAction.PREDICTION_FAIL,
        organization=prediction.scan.case.organization,
        target=prediction,
        details={"error": message[:500]},
    )
    return prediction


def _prediction_succeed(
    *, prediction_id: uuid.UUID, attempt: int, result, overlays: list[bytes], slices: list, timings: dict
) -> Prediction:
    written: list[str] = []
    try:
        with transaction.atomic():
            prediction = (
                Prediction.objects.select_for_update(of=("self",)).select_related("scan__case").get(pk=prediction_id)
            )
            if prediction.status != PredictionStatus.RUNNING or prediction.attempts != attempt:
                return prediction
            slice_probabilities = [float(p) for p in result.slice_probabilities]
            heatmaps = []
            for index, png in enumerate(overlays):
                heatmap = HeatMap(
                    prediction=prediction,
                    slice=slices[index],
                    index=index,
                    probability=slice_probabilities[index] if index < len(slice_probabilities) else None,
                )
                heatmap.image.save("heatmap.png", ContentFile(png), save=False)
                written.append(heatmap.image.name)
                heatmaps.append(heatmap)
            HeatMap.objects.bulk_create(heatmaps)
            prediction.status = PredictionStatus.SUCCEEDED
            prediction.probability = float(result.probability)
            prediction.threshold = float(result.threshold)
            prediction.label = bool(result.label)
            prediction.slice_probabilities = slice_probabilities
            prediction.slab_reading = dict(result.slabs)
            prediction.timings = timings
            prediction.finished = timezone.now()
            prediction.save()
            record_audit_event(
                action=AuditAction.PREDICTION_SUCCEED,
                organization=prediction.scan.case.organization,
                target=prediction,
                details={
                    "probability": prediction.probability,
                    "label": prediction.label,
                    "model_version": str(prediction.model_version_id),
                    **({"slabs": prediction.slab_reading["slabs"]} if prediction.slab_reading else {}),
                },
            )
    except BaseException:
        storage = private_storage()
        for name in written:
            storage.delete(name)
        raise
    return prediction
