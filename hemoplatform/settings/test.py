"""Test settings: PostgreSQL and Redis from DATABASE_URL / CELERY_BROKER_URL, media in a temporary folder.

A real Celery worker started by tests/conftest.py uses these settings too; it receives the same media folder through
HEMO_MEDIA_ROOT so that both processes see the same files.
"""

import os
import tempfile
from pathlib import Path

from hemoplatform.settings.base import *  # noqa: F403
from hemoplatform.settings.base import DATABASES, HEMO_VAR_DIR, STORAGES, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="test-only-secret-key-not-for-production-0123456789")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# The first import picks a temporary folder and exports it, so subprocesses (worker, manage.py) share it.
MEDIA_ROOT = Path(os.environ.setdefault("HEMO_MEDIA_ROOT", tempfile.mkdtemp(prefix="hemo-test-media-")))
STORAGES = {
    **STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    },
    "private": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT / "private"), "base_url": None},
    },
    # Manifest storage fails in live-server tests (DEBUG off, no collectstatic).
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Registered models are copied beside the media, so a test run leaves nothing in var/.
HEMO_MODEL_STORE_DIR = MEDIA_ROOT / "models"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not pytest-django's in-memory default, so that a worker subprocess can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(HEMO_VAR_DIR / "test-db.sqlite3")}
STATIC_ROOT = MEDIA_ROOT / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# API throttles count in process memory, never in a cache shared with other runs (tests set the rates).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "hemo-tests"}}
