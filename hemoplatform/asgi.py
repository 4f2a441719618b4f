import os

from django.core.asgi import get_asgi_application

# A web server is a deployment: production settings unless told otherwise (manage.py and scripts/up.sh say
# hemoplatform.settings.local for development).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hemoplatform.settings.production")

application = get_asgi_application()
