"""Fixtures shared by the platform, API and page tests.

Users and records
    make_organization(name=...), make_user(role=..., organization=..., username=..., password=...)
    organization, other_organization
    clinician, auditor, org_admin          (same organization), other_clinician (other organization)
    case                                   a case of `organization` owned by `clinician`
    clinician_client, auditor_client, org_admin_client, other_clinician_client   logged-in Django test clients
    PASSWORD                               the password of every user made here
Data (skip with a how-to message when HEMO_DATA_DIR is missing)
    data_dir, head_ct_png, ct_ich_jpg, ge_series_paths (28 DICOM paths, shuffled)
    upload(path_or_bytes, name=None) -> SimpleUploadedFile
Files
    private_files() -> set of file paths under the private storage (compare before/after to prove cleanup)
Models
    model_dir (the trained default model; skip when absent), model_version (registered + active)
    fake_model_dir (model.pt of random bytes + metadata.json: enough for registration, health, failure paths)
Worker
    celery_worker: a real `celery -A hemoplatform worker` subprocess on the test database and broker
    (session-scoped; use it with `transactional_db` so that the worker sees committed rows)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-9"


# --- data -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from ml.paths import DataNotFound
    from ml.paths import data_dir as ml_data_dir

    try:
        return ml_data_dir(required=True)
    except DataNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def head_ct_png(data_dir: Path) -> Path:
    path = data_dir / "head_ct" / "000.png"
    if not path.is_file():
        pytest.skip(f"{path} missing; see {data_dir}/README.md for the public datasets")
    return path


@pytest.fixture(scope="session")
def ct_ich_jpg(data_dir: Path) -> Path:
    paths = sorted((data_dir / "ct_ich" / "Patients_CT").glob("*/brain/*.jpg"))
    if not paths:
        pytest.skip(f"no CT-ICH JPG under {data_dir}/ct_ich; see {data_dir}/README.md")
    return paths[0]


@pytest.fixture(scope="session")
def ge_series_paths(data_dir: Path) -> list[Path]:
    paths = sorted((data_dir / "dicom" / "ge_head_series").glob("*.dcm"))
    if len(paths) != 28:
        pytest.skip(f"{data_dir}/dicom/ge_head_series must hold 28 DICOM files; see {data_dir}/README.md")
    random.Random(7).shuffle(paths)  # ingestion, not the file names, must restore the order
    return paths


def make_upload(source: Path | bytes, name: str | None = None) -> SimpleUploadedFile:
    if isinstance(source, Path):
        return SimpleUploadedFile(name or source.name, source.read_bytes())
    return SimpleUploadedFile(name or "upload.bin", source)


@pytest.fixture
def upload() -> Callable[..., SimpleUploadedFile]:
    return make_upload


@pytest.fixture
def private_files() -> Callable[[], set[str]]:
    def snapshot() -> set[str]:
        from django.core.files.storage import storages

        root = Path(storages["private"].location)
        return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()

    return snapshot


# --- users and records ------------------------------------------------------------------------------------------------


@pytest.fixture
def make_organization(db):
    from accounts.models import Organization

    def make(name: str = "St Example Hospital"):
        return Organization.objects.create(name=name, slug=Organization.unique_slug(name))

    return make


@pytest.fixture
def make_user(db):
    from allauth.account.models import EmailAddress

    from accounts.models import Role, User

    def make(
        *, role: str = Role.CLINICIAN, organization=None, username: str | None = None, password: str = PASSWORD, **extra
    ):
        username = username or f"{role}-{uuid.uuid4().hex[:8]}"
        user = User.objects.create_user(
            username=username,
            email=f"{username}@example.org",
            password=password,
            role=role,
            organization=organization,
            **extra,
        )
        # Verified, as allauth requires before sign-in.
        EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
        return user

    return make


@pytest.fixture
def organization(make_organization):
    return make_organization("St Example Hospital")


@pytest.fixture
def other_organization(make_organization):
    return make_organization("Elsewhere Clinic")


@pytest.fixture
def clinician(make_user, organization):
    return make_user(role="clinician", organization=organization, username="clin")


@pytest.fixture
def auditor(make_user, organization):
    return make_user(role="auditor", organization=organization, username="aud")


@pytest.fixture
def org_admin(make_user, organization):
    return make_user(role="admin", organization=organization, username="orgadmin")


@pytest.fixture
def other_clinician(make_user, other_organization):
    return make_user(role="clinician", organization=other_organization, username="otherclin")


@pytest.fixture
def case(clinician):
    from scans.services import case_create

    return case_create(user=clinician, patient_ref="HOSP-000123", title="Head CT after fall")


def _logged_in(client_factory, user):
    client = client_factory()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def clinician_client(clinician):
    from django.test import Client

    return _logged_in(Client, clinician)


@pytest.fixture
def auditor_client(auditor):
    from django.test import Client

    return _logged_in(Client, auditor)


@pytest.fixture
def org_admin_client(org_admin):
    from django.test import Client

    return _logged_in(Client, org_admin)


@pytest.fixture
def other_clinician_client(other_clinician):
    from django.test import Client

    return _logged_in(Client, other_clinician)


# --- models -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir() -> Path:
    from django.conf import settings

    path = Path(settings.HEMO_MODEL_DIR)
    if not ((path / "model.pt").is_file() and (path / "metadata.json").is_file()):
        pytest.skip(f"no trained model at {path} (train one with ml.train, or set HEMO_MODEL_DIR)")
    return path


@pytest.fixture
def model_version(db, model_dir):
    from inference.services import model_version_register

    version, _ = model_version_register(path=model_dir, activate=True, copy=False)
    return version


@pytest.fixture
def fake_model_dir(tmp_path) -> Path:
    path = tmp_path / "fake-model"
    path.mkdir()
    (path / "model.pt").write_bytes(os.urandom(256))
    (path / "metadata.json").write_text(
        json.dumps({"name": "fake", "version": "0.0.1", "threshold": 0.42, "metrics": {"auc": 0.5}})
    )
    return path


# --- a real Celery worker ---------------------------------------------------------------------------------------------


def _worker_database_url(settings_dict: dict) -> str:
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    url = urlparse(os.environ["DATABASE_URL"])
    return urlunparse(url._replace(path="/" + settings_dict["NAME"]))


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """A real worker process (`celery -A hemoplatform worker -Q cpu,gpu`) on pytest-django's test database.

    Yields its node name. Stopped before the test database is dropped (this fixture depends on django_db_setup).
    """
    from django.db import connection

    from hemoplatform.celery import app

    with django_db_blocker.unblock():
        database_url = _worker_database_url(connection.settings_dict)
    app.control.purge()  # leftovers of earlier runs must not reach this worker
    node = f"test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "hemoplatform.settings.test",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "hemoplatform",
        "worker",
        "-Q",
        "cpu,gpu",
        "-n",
        node,
        "--concurrency=1",
        "--pool=solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=INFO",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Celery worker exited ({process.returncode}):\n{log_path.read_text()[-4000:]}")
            if app.control.ping(destination=[node], timeout=1.0):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not answer ping in 90 s:\n{log_path.read_text()[-4000:]}")
        yield node
    finally:
        stop_process(process)
        if os.environ.get("HEMO_KEEP_WORKER_LOG"):
            shutil.copy(log_path, REPO_ROOT / "var" / "test-worker.log")


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a Celery worker's warm shutdown), then SIGKILL after `timeout` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
