# The Celery app (hemoplatform.celery) is deliberately NOT imported here: it defaults DJANGO_SETTINGS_MODULE to the
# development settings, and importing it with the package would make that default win over the production default
# of hemoplatform.wsgi / hemoplatform.asgi. `celery -A hemoplatform` finds hemoplatform.celery by itself, and the
# tasks use the app through hemoplatform.celery.hemo_task, so nothing needs it at package import.
