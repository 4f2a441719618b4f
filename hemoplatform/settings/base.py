"""Settings shared by every environment. Everything that differs between machines comes from the environment.

Embedded defaults (no services needed): a SQLite file and a kombu filesystem broker under ``HEMO_VAR_DIR``.
Deployment sets ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis). See ``.env.example``.
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# An .env file beside manage.py is read when present; real environment variables win.
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"), overwrite=False)

# --- runtime folders -------------------------------------------------------------------------------------------------
HEMO_VAR_DIR = Path(env("HEMO_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
HEMO_DATA_DIR = Path(env("HEMO_DATA_DIR", default=str(BASE_DIR.parent / "shared" / "data"))).resolve()
# The model registered on first use when no ModelVersion is active (manage.py register_model does it explicitly).
HEMO_MODEL_DIR = Path(env("HEMO_MODEL_DIR", default=str(BASE_DIR / "ml" / "models" / "default")))
if not HEMO_MODEL_DIR.is_absolute():
    HEMO_MODEL_DIR = (BASE_DIR / HEMO_MODEL_DIR).resolve()
# Registered model artifacts are copied here so that a prediction's model can never change under it.
HEMO_MODEL_STORE_DIR = Path(env("HEMO_MODEL_STORE_DIR", default=str(HEMO_VAR_DIR / "models"))).resolve()

# --- core ------------------------------------------------------------------------------------------------------------
SECRET_KEY = env("SECRET_KEY", default="")  # local.py supplies a development default; production requires it
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "allauth",
    "allauth.account",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "accounts",
    "scans",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "hemoplatform.middleware.PrivateResponsesNotStoredMiddleware",
    # After authentication (the 413 page shows the signed-in user); before any view reads the body.
    "hemoplatform.middleware.RequestSizeLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "hemoplatform.urls"
WSGI_APPLICATION = "hemoplatform.wsgi.application"
SITE_ID = 1

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.permissions",
            ],
        },
    },
]

# --- database --------------------------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{HEMO_VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and a separate worker share the file: WAL lets readers run beside the writer, and a busy
    # timeout plus IMMEDIATE transactions avoid "database is locked" when both write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth ------------------------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

# django-allauth 65: sign in with email or username; email must be verified before the first sign-in.
ACCOUNT_LOGIN_METHODS = {"email", "username"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[HemoPlatform] "
# Sign-up is open by default (each sign-up founds its own organization); set false for invite-only deployments.
HEMO_SIGNUP_OPEN = env.bool("HEMO_SIGNUP_OPEN", default=True)
# The organization a superuser created with `createsuperuser` joins when none is given.
HEMO_DEFAULT_ORGANIZATION_NAME = env("HEMO_DEFAULT_ORGANIZATION_NAME", default="HemoPlatform")

# --- email -----------------------------------------------------------------------------------------------------------
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=15)  # seconds: a hung mail server never holds a request for long
for _key in ("EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS", "EMAIL_USE_SSL"):
    if _key in _email:
        globals()[_key] = _email[_key]
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="HemoPlatform <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- i18n ------------------------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- static and media ------------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [p for p in [BASE_DIR / "static"] if p.is_dir()]
# Clinical files are private: no URL pattern serves MEDIA_URL (storages fall back to it for .url(), which therefore
# points nowhere); files reach users only through views that check permission (scans.views, inference.views).
MEDIA_ROOT = Path(env("HEMO_MEDIA_ROOT", default=str(HEMO_VAR_DIR / "media"))).resolve()
MEDIA_URL = "/media-not-served/"
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    },
    "private": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT / "private"), "base_url": None},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# --- upload limits (enforced by scans.services.scan_ingest) ----------------------------------------------------------
HEMO_MAX_UPLOAD_MB = env.int("HEMO_MAX_UPLOAD_MB", default=256)
HEMO_MAX_SLICES = env.int("HEMO_MAX_SLICES", default=1000)
HEMO_ZIP_MAX_MEMBERS = env.int("HEMO_ZIP_MAX_MEMBERS", default=2000)
HEMO_ZIP_MAX_UNCOMPRESSED_MB = env.int("HEMO_ZIP_MAX_UNCOMPRESSED_MB", default=2048)
HEMO_ZIP_MAX_RATIO = env.int("HEMO_ZIP_MAX_RATIO", default=100)
HEMO_MAX_IMAGE_PIXELS = env.int("HEMO_MAX_IMAGE_PIXELS", default=64_000_000)
# A multi-frame DICOM file (a series in one file) may hold at most this many pixels in all: what an upload of
# HEMO_MAX_UPLOAD_MB of uncompressed 16-bit slices holds, so a small compressed file cannot expand past it.
HEMO_MAX_SERIES_PIXELS = env.int("HEMO_MAX_SERIES_PIXELS", default=HEMO_MAX_UPLOAD_MB * 1024 * 1024 // 2)
# Django must hand large uploads to the service (which applies HEMO_MAX_UPLOAD_MB) instead of refusing them early.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000)

# --- Celery ----------------------------------------------------------------------------------------------------------
_broker_dir = HEMO_VAR_DIR / "broker"
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
HEMO_TASK_SOFT_TIME_LIMIT = env.int("HEMO_TASK_SOFT_TIME_LIMIT", default=900)
HEMO_TASK_TIME_LIMIT = env.int("HEMO_TASK_TIME_LIMIT", default=HEMO_TASK_SOFT_TIME_LIMIT + 60)
# A prediction left "running" longer than the hard limit cannot still be running: a redelivered task may take it over.
# How long a worker keeps trying to store a finished prediction while the database is away (then it re-queues it).
HEMO_STORE_RETRY_S = env.int("HEMO_STORE_RETRY_S", default=60)
HEMO_PREDICTION_STALE_AFTER_S = env.int("HEMO_PREDICTION_STALE_AFTER_S", default=HEMO_TASK_TIME_LIMIT + 60)
# Runs of one prediction before it is marked failed: a job that crashes its worker must not be taken over forever.
HEMO_PREDICTION_MAX_ATTEMPTS = max(1, env.int("HEMO_PREDICTION_MAX_ATTEMPTS", default=3))
# Celery beat (scripts/up.sh runs it inside the worker, compose as its own service) enqueues again, every
# HEMO_REQUEUE_EVERY_S, predictions queued for longer than HEMO_REQUEUE_QUEUED_FOR_S whose message may be lost.
HEMO_REQUEUE_EVERY_S = env.int("HEMO_REQUEUE_EVERY_S", default=300)
HEMO_REQUEUE_QUEUED_FOR_S = env.int("HEMO_REQUEUE_QUEUED_FOR_S", default=600)
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-predictions": {
        "task": "inference.tasks.requeue_stale_predictions",
        "schedule": float(HEMO_REQUEUE_EVERY_S),
    }
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Absolute folders: the web process and a worker started elsewhere must meet in the same place.
    _folders = {
        "data_folder_in": _broker_dir / "queue",
        "data_folder_out": _broker_dir / "queue",
        "processed_folder": _broker_dir / "processed",
        "control_folder": _broker_dir / "control",
    }
    for _folder in _folders.values():
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {key: str(value) for key, value in _folders.items()}
    CELERY_BROKER_TRANSPORT_OPTIONS["store_processed"] = False
    # kombu polls the queue folder once a second by default: up to a second of queue wait on every prediction
    # (bench/e2e.py measured 0.85-0.97 s p50). A listdir every 0.1 s costs nothing measurable.
    CELERY_BROKER_TRANSPORT_OPTIONS["polling_interval"] = env.float("HEMO_BROKER_POLL_S", default=0.1)
else:
    # Redis redelivers unacknowledged (acks_late) messages after the visibility timeout, so it must exceed the
    # longest task, or a running prediction would be handed to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=max(3600, 2 * HEMO_TASK_TIME_LIMIT))
    }
CELERY_RESULT_BACKEND = None  # results live in PostgreSQL rows (Prediction), not in a result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "cpu"  # a plain `celery -A hemoplatform worker` consumes it
CELERY_TASK_ROUTES = ("hemoplatform.celery.route_task",)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Queue for prediction tasks: "cpu" by default, "gpu" to send them to GPU workers (celery ... worker -Q gpu).
HEMO_PREDICTION_QUEUE = env("HEMO_PREDICTION_QUEUE", default="cpu")
# Device for the predictor in workers: empty = CUDA when available, else CPU.
HEMO_INFERENCE_DEVICE = env("HEMO_INFERENCE_DEVICE", default="") or None

# --- DRF (the API engineer builds on this) ---------------------------------------------------------------------------
# Deny by default: every endpoint needs an authenticated user unless it says otherwise.
REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Token first: its WWW-Authenticate header makes missing credentials a 401 (session-only would answer 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "hemoplatform.api_support.StandardPagination",
    "PAGE_SIZE": 25,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hemoplatform.api_errors.api_exception_handler",
    # Throttles key anonymous clients by address. 0 = REMOTE_ADDR only (X-Forwarded-For, which any client can forge,
    # is ignored); behind N trusted reverse proxies set HEMO_API_NUM_PROXIES=N.
    "NUM_PROXIES": env.int("HEMO_API_NUM_PROXIES", default=0),
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
# Scoped API throttles (hemoplatform.api_support), read on every request: "N/second|minute|hour|day".
HEMO_API_THROTTLE_RATES = {
    "token": env("HEMO_API_THROTTLE_TOKEN", default="10/minute"),  # POST /api/v1/auth/token/, per client address
    "upload": env("HEMO_API_THROTTLE_UPLOAD", default="60/hour"),  # scan uploads, per user
}
# Throttle counters and allauth's failed-sign-in limits live in the default cache, which every web process must
# share (gunicorn runs several: a per-process cache multiplies each limit by their number). Default: files under
# HEMO_VAR_DIR, shared by the processes of one machine; CACHE_URL=redis://... for several machines.
CACHES = {"default": env.cache("CACHE_URL", default=f"filecache://{HEMO_VAR_DIR / 'cache'}")}
if CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
    # Django's default of 300 entries culls a random third of them when full: lockout and throttle counters would
    # vanish at random (and anyone could force it by trying new names). Expired entries still go on reading.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 1_000_000)
SPECTACULAR_SETTINGS = {
    "TITLE": "HemoPlatform API",
    "DESCRIPTION": "Intracranial hemorrhage detection on head CT. Research use only; not a diagnostic device. "
    'Errors are JSON: {"detail": message, "code": reason, "errors": {field: [messages]}}.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "ScanStatusEnum": "scans.models.ScanStatus",
        "PredictionStatusEnum": "inference.models.PredictionStatus",
    },
}

# --- logging ---------------------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}
