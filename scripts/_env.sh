# Shared by scripts/up.sh and scripts/test.sh: find Python 3.11 and keep .venv in step with the requirements.
VENV="${HEMO_VENV:-$PWD/.venv}"
PY="$VENV/bin/python"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)." >&2
  return 1
}

# (Re)install only when a requirements file changed since the last successful install.
ensure_venv() {
  local reqs="$1" stamp
  if [ ! -x "$PY" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  stamp="$VENV/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$reqs")"
  if [ ! -f "$stamp" ]; then
    echo "== installing $reqs into $VENV (first run takes a few minutes)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r "$reqs"
    touch "$stamp"
  fi
}
