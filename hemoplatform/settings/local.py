"""Local development: DEBUG on, a development secret key, embedded SQLite and filesystem broker unless set."""

from hemoplatform.settings.base import *  # noqa: F403
from hemoplatform.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
# Development only; production.py refuses to start without SECRET_KEY in the environment.
SECRET_KEY = env("SECRET_KEY", default="django-insecure-local-development-key-change-me-0123456789abcdef")
# Serve static files straight from the apps while developing (no collectstatic needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
