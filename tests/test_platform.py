"""Project level: /health, production settings, and the embedded defaults (SQLite + filesystem broker)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, stop_process


def test_health_ok_when_database_broker_and_model_are(client, db, settings, fake_model_dir):
    settings.HEMO_MODEL_DIR = fake_model_dir
    response = client.get("/health")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "model": True,
    }


def test_health_503_without_a_model(client, db, settings, tmp_path):
    settings.HEMO_MODEL_DIR = tmp_path
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["model"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


def _manage(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _clean_env(**overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "HEMO_MEDIA_ROOT", "DJANGO_SETTINGS_MODULE")
    }
    env.update(overrides)
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="hemoplatform.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="hemo.example.org",
        CSRF_TRUSTED_ORIGINS="https://hemo.example.org",
        HEMO_VAR_DIR=str(tmp_path),
    )
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Zero warnings, and none hidden by SILENCED_SYSTEM_CHECKS either.
    assert result.stdout.strip() == "System check identified no issues (0 silenced).", result.stdout
    assert "WARNING" not in result.stderr, result.stderr


def test_the_web_server_entry_points_default_to_production_settings(tmp_path):
    # gunicorn/uvicorn started without DJANGO_SETTINGS_MODULE must not run the development settings (DEBUG on).
    env = _clean_env(ALLOWED_HOSTS="x", HEMO_VAR_DIR=str(tmp_path))
    env.pop("SECRET_KEY", None)
    for module in ("hemoplatform.wsgi", "hemoplatform.asgi"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr, (module, result.stderr[-500:])


def test_local_settings_hold_no_secret_key_of_the_repository(tmp_path):
    # Development keys are made per installation (in HEMO_VAR_DIR, owner-only) and shared by its processes.
    script = "from django.conf import settings; print(settings.SECRET_KEY)"
    keys = []
    for var_dir in (tmp_path / "a", tmp_path / "a", tmp_path / "b"):
        env = _clean_env(DJANGO_SETTINGS_MODULE="hemoplatform.settings.local", HEMO_VAR_DIR=str(var_dir))
        env.pop("SECRET_KEY", None)
        result = _manage(["shell", "-c", script], env)
        assert result.returncode == 0, result.stderr
        keys.append(result.stdout.strip())
    assert keys[0] == keys[1] != keys[2] and len(keys[0]) >= 50
    assert ((tmp_path / "a" / "secret-key").stat().st_mode & 0o777) == 0o600
    for path in (REPO_ROOT / "hemoplatform" / "settings").glob("*.py"):
        assert keys[0] not in path.read_text()


def test_env_example_lists_every_variable_the_settings_read():
    import re

    read = set()
    for path in (REPO_ROOT / "hemoplatform" / "settings").glob("*.py"):
        read |= set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", path.read_text()))
    assert {"SECRET_KEY", "DATABASE_URL", "HEMO_MAX_SLICES"} <= read  # the pattern finds them
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (REPO_ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read - listed == set(), "add these to .env.example"


def test_the_docker_image_build_step_runs_with_production_settings(tmp_path):
    # The Dockerfile runs collectstatic under production settings at build time; those refuse a short SECRET_KEY
    # and a missing ALLOWED_HOSTS, so the step must bring acceptable throwaway values.
    lines = (REPO_ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    (step,) = [line for line in lines if line.startswith("RUN ") and "collectstatic" in line]
    command = step.removeprefix("RUN ").replace("python ", f"{sys.executable} ")
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="hemoplatform.settings.production",
        HEMO_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
    )
    for name in ("SECRET_KEY", "ALLOWED_HOSTS"):
        env.pop(name, None)
    result = subprocess.run(["sh", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "static" / "css").is_dir()


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="hemoplatform.settings.production", ALLOWED_HOSTS="x", HEMO_VAR_DIR=str(tmp_path)
    )
    env.pop("SECRET_KEY", None)
    result = _manage(["check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


EMBEDDED_SCRIPT = textwrap.dedent(
    """
    import json, os, time
    from django.core.files.uploadedfile import SimpleUploadedFile
    from accounts.models import Organization, User
    from inference.services import scan_submit
    from scans.services import case_create

    org = Organization.objects.create(name="Embedded", slug="embedded")
    user = User.objects.create_user("doc", "doc@example.org", "x-long-passphrase-1", organization=org)
    case = case_create(user=user, patient_ref="EMB-001")
    with open(os.environ["EMBEDDED_IMAGE"], "rb") as handle:
        upload = SimpleUploadedFile("slice.png", handle.read())
    scan, prediction = scan_submit(case=case, user=user, files=[upload])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        prediction.refresh_from_db()
        if prediction.is_finished:
            break
        time.sleep(1)
    print("RESULT " + json.dumps({"status": prediction.status, "probability": prediction.probability,
                                  "error": prediction.error_message, "heatmaps": prediction.heatmaps.count()}))
    """
)


@pytest.mark.slow
def test_embedded_default_sqlite_and_filesystem_broker_with_a_separate_worker(tmp_path, head_ct_png, model_dir):
    """No DATABASE_URL, no CELERY_BROKER_URL: migrate, a plain `celery -A hemoplatform worker`, a prediction."""
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="hemoplatform.settings.local",
        HEMO_VAR_DIR=str(tmp_path / "var"),
        HEMO_MODEL_DIR=str(model_dir),
        PYTHONUNBUFFERED="1",
    )
    migrate = _manage(["migrate", "--noinput", "-v", "0"], env)
    assert migrate.returncode == 0, migrate.stderr
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hemoplatform", "worker", "--concurrency=1", "--loglevel=INFO"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result = _run_script(EMBEDDED_SCRIPT, tmp_path, {**env, "EMBEDDED_IMAGE": str(head_ct_png)})
        assert result["status"] == "succeeded", (result, log_path.read_text()[-3000:])
        assert 0.0 <= result["probability"] <= 1.0
        assert result["heatmaps"] == 1
        assert (tmp_path / "var" / "db.sqlite3").is_file()
        assert (tmp_path / "var" / "broker" / "control").is_dir()
    finally:
        stop_process(worker)


LOST_MESSAGE_SCRIPT = textwrap.dedent(
    """
    import json, os, pathlib
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from accounts.models import Organization, User
    from inference.services import scan_submit
    from scans.services import case_create

    org = Organization.objects.create(name="Lost", slug="lost")
    user = User.objects.create_user("doc", "doc@example.org", "x-long-passphrase-1", organization=org)
    case = case_create(user=user, patient_ref="LOST-001")
    with open(os.environ["EMBEDDED_IMAGE"], "rb") as handle:
        scan, prediction = scan_submit(case=case, user=user, files=[SimpleUploadedFile("slice.png", handle.read())])
    # The broker loses the message (a crash before it reached disk, a flushed Redis): delete it.
    queue = pathlib.Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"])
    lost = [path for path in queue.iterdir() if path.is_file()]
    for path in lost:
        path.unlink()
    print("RESULT " + json.dumps({"id": str(prediction.pk), "lost": len(lost), "status": prediction.status}))
    """
)

POLL_SCRIPT = textwrap.dedent(
    """
    import json, os, time
    from inference.models import Prediction

    prediction = Prediction.objects.get(pk=os.environ["PREDICTION_ID"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not prediction.is_finished:
        time.sleep(1)
        prediction.refresh_from_db()
    print("RESULT " + json.dumps({"status": prediction.status, "error": prediction.error_message}))
    """
)


def _run_script(source: str, tmp_path: Path, env: dict[str, str]) -> dict:
    script = tmp_path / f"script_{abs(hash(source))}.py"
    script.write_text(source)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, runpy, sys; django.setup(); runpy.run_path(sys.argv[1], run_name='__main__')",
            str(script),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.slow
def test_beat_in_the_worker_recovers_a_prediction_whose_message_was_lost(tmp_path, head_ct_png, model_dir):
    """The worker as scripts/up.sh starts it (`worker -B`): Celery beat sweeps for predictions queued too long and
    enqueues them again, so a prediction whose broker message was lost still finishes without anyone acting."""
    env = _clean_env(
        DJANGO_SETTINGS_MODULE="hemoplatform.settings.local",
        HEMO_VAR_DIR=str(tmp_path / "var"),
        HEMO_MODEL_DIR=str(model_dir),
        HEMO_REQUEUE_EVERY_S="2",
        HEMO_REQUEUE_QUEUED_FOR_S="1",
        PYTHONUNBUFFERED="1",
        EMBEDDED_IMAGE=str(head_ct_png),
    )
    assert _manage(["migrate", "--noinput", "-v", "0"], env).returncode == 0
    submitted = _run_script(LOST_MESSAGE_SCRIPT, tmp_path, env)
    assert submitted["lost"] == 1 and submitted["status"] == "queued"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hemoplatform",
                "worker",
                "-B",
                "-s",
                str(tmp_path / "var" / "celerybeat-schedule"),
                "--concurrency=1",
                "--loglevel=INFO",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        result = _run_script(POLL_SCRIPT, tmp_path, {**env, "PREDICTION_ID": submitted["id"]})
        assert result["status"] == "succeeded", (result, log_path.read_text()[-3000:])
        assert "requeue_stale_predictions" in log_path.read_text()
    finally:
        stop_process(worker)
