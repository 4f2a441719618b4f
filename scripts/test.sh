#!/usr/bin/env bash
# The whole test suite: lint, then every test (ml, platform, API, browser) against PostgreSQL and Redis.
# Usage: scripts/test.sh [pytest args...]
# Needs PostgreSQL and Redis reachable (defaults: 127.0.0.1:5432 as user postgres, 127.0.0.1:6379) and, for the
# browser tests, Chromium + ChromeDriver (Debian: apt-get install chromium chromium-driver). .ci/run starts/installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
ensure_venv requirements-dev.txt

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/hemoplatform}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export HEMO_DATA_DIR="${HEMO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
export PYTHONUNBUFFERED=1

"$PY" - <<'PYCHECK'
import os, socket, sys, urllib.parse
for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
    url = urllib.parse.urlparse(os.environ[name])
    try:
        socket.create_connection((url.hostname, url.port), timeout=3).close()
    except OSError as exc:
        sys.exit(f"{name}={os.environ[name]} is not reachable ({exc}). Start PostgreSQL and Redis, or run .ci/run.")
PYCHECK

if [ ! -d "$HEMO_DATA_DIR" ]; then
  echo "NOTE: HEMO_DATA_DIR=$HEMO_DATA_DIR does not exist: tests that need the public CT data will be skipped (see README, 'Data')."
fi

echo "== ruff"
"$VENV/bin/ruff" check .
echo "== pytest"
exec "$VENV/bin/pytest" "$@"
