from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from scans import signals  # noqa: F401  (files follow their rows)
