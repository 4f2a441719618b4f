#!/usr/bin/env bash
# One command from a fresh clone to a running platform: environment, packages, database, model, first admin,
# then the web server and a separate Celery worker, in the foreground (Ctrl-C stops both).
#
# With no DATABASE_URL / CELERY_BROKER_URL it runs on the embedded defaults (SQLite file and a filesystem broker
# under var/); set them to use PostgreSQL and Redis. No root and no system services are needed.
# The first admin: HEMO_ADMIN_USERNAME (default admin), HEMO_ADMIN_EMAIL, HEMO_ADMIN_PASSWORD; without a password one
# is generated, printed once and kept in var/admin-credentials.txt (readable by you only).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements.txt

export HEMO_VAR_DIR="${HEMO_VAR_DIR:-$PWD/var}"
export HEMO_DATA_DIR="${HEMO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-hemoplatform.settings.local}"
HOST="${HEMO_HOST:-127.0.0.1}"
PORT="${HEMO_PORT:-8000}"
mkdir -p "$HEMO_VAR_DIR/log"
chmod 700 "$HEMO_VAR_DIR"

echo "== database: ${DATABASE_URL:-embedded SQLite in $HEMO_VAR_DIR}"
echo "== broker:   ${CELERY_BROKER_URL:-embedded filesystem broker in $HEMO_VAR_DIR/broker}"
"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput -v 0
# --unless-chosen: a version an admin activated stays active across restarts.
"$PY" manage.py register_model "${HEMO_MODEL_DIR:-ml/models/default}" --activate --unless-chosen

admin_user="${HEMO_ADMIN_USERNAME:-admin}"
creds="$HEMO_VAR_DIR/admin-credentials.txt"
if ! "$PY" manage.py shell -c "from django.contrib.auth import get_user_model as g; import sys; sys.exit(0 if g().objects.filter(is_superuser=True).exists() else 1)"; then
  password="${HEMO_ADMIN_PASSWORD:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')}"
  DJANGO_SUPERUSER_USERNAME="$admin_user" DJANGO_SUPERUSER_EMAIL="${HEMO_ADMIN_EMAIL:-admin@example.org}" \
    DJANGO_SUPERUSER_PASSWORD="$password" "$PY" manage.py createsuperuser --noinput
  if [ -z "${HEMO_ADMIN_PASSWORD:-}" ]; then
    (umask 077; printf 'username: %s\npassword: %s\n' "$admin_user" "$password" > "$creds")
    echo "== first admin created: username '$admin_user', password '$password' (also in $creds)"
  else
    echo "== first admin created: username '$admin_user' with HEMO_ADMIN_PASSWORD"
  fi
else
  echo "== an admin account exists already${HEMO_ADMIN_PASSWORD:+}; credentials of the first one: $creds (if generated)"
fi

pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT

# -B: the worker also runs Celery beat, which re-enqueues predictions whose message was lost (HEMO_REQUEUE_EVERY_S).
"$VENV/bin/celery" -A hemoplatform worker -B -s "$HEMO_VAR_DIR/celerybeat-schedule" \
  -Q "${HEMO_WORKER_QUEUES:-cpu,gpu}" --concurrency=1 --loglevel=INFO >>"$HEMO_VAR_DIR/log/worker.log" 2>&1 &
# (The worker logs through Django's root console handler, not Celery's --logfile: its output goes to the file here.)
pids+=($!)
"$VENV/bin/gunicorn" hemoplatform.wsgi:application --bind "$HOST:$PORT" --workers 2 --timeout 120 \
  --access-logfile "$HEMO_VAR_DIR/log/access.log" --error-logfile "$HEMO_VAR_DIR/log/web.log" &
pids+=($!)

for _ in $(seq 1 60); do
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://$HOST:$PORT/health', timeout=2)" 2>/dev/null; then break; fi
  sleep 1
done
echo "== HemoPlatform is up at http://$HOST:$PORT  (worker log: $HEMO_VAR_DIR/log/worker.log; Ctrl-C stops)"
wait -n "${pids[@]}"
