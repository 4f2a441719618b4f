# The Celery app is loaded with Django so that @shared_task and on_commit enqueueing use our configuration.
from hemoplatform.celery import app as celery_app

__all__ = ("celery_app",)
