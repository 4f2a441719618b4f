from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from hemoplatform.middleware import request_limit_refusal, too_large_response


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_broker() -> str:
    from hemoplatform.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    return "ok"


def _check_model() -> str:
    # Only files are checked: loading the model (torch) is the workers' business, not the web process's.
    from inference.models import ModelVersion

    active = ModelVersion.objects.filter(is_active=True).first()
    directory = active.directory if active is not None else Path(settings.HEMO_MODEL_DIR)
    if not (directory / "model.pt").is_file() or not (directory / "metadata.json").is_file():
        raise FileNotFoundError("no active model and no model in HEMO_MODEL_DIR")
    return "ok" if active is not None else "ok (default model will be registered on first use)"


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness: database, broker and model. 200 when all are ok, 503 otherwise. No secrets shown."""
    checks = {}
    healthy = True
    for name, check in (("database", _check_database), ("broker", _check_broker), ("model", _check_model)):
        try:
            checks[name] = {"ok": True, "detail": check()}
        except Exception as exc:
            healthy = False
            checks[name] = {"ok": False, "detail": exc.__class__.__name__}
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: Django's own request limits (more files than DATA_UPLOAD_MAX_NUMBER_FILES, form data over
    DATA_UPLOAD_MAX_MEMORY_SIZE) are raised while the CSRF check reads the form, before any view: they answer 413
    with a message, as the upload service's limits do, instead of a bare 400."""
    refusal = request_limit_refusal(exception)
    if refusal is not None:
        return too_large_response(request, refusal[0], code=refusal[1])
    return defaults.bad_request(request, exception)
