"""Local development: DEBUG on, a per-installation secret key, embedded SQLite and filesystem broker unless set."""

import os
import secrets

from hemoplatform.settings.base import *  # noqa: F403
from hemoplatform.settings.base import HEMO_VAR_DIR, env

DEBUG = env.bool("DEBUG", default=True)


def _installation_secret_key() -> str:
    """A random key made on first use and kept in HEMO_VAR_DIR (readable by its owner only), so that no key is ever
    in the repository and every process of this installation (web, worker, manage.py) signs with the same one."""
    path = HEMO_VAR_DIR / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it a moment ago
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


# Production (settings.production) refuses to start without SECRET_KEY in the environment.
SECRET_KEY = env("SECRET_KEY", default="") or _installation_secret_key()
# Serve static files straight from the apps while developing (no collectstatic needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
