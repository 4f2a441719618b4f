from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.services import model_version_register


class Command(BaseCommand):
    help = "Register a model artifact folder (model.pt + metadata.json); idempotent by the sha256 of weights + card."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="folder with model.pt and metadata.json")
        parser.add_argument("--activate", action="store_true", help="make it the model new predictions use")
        parser.add_argument(
            "--unless-chosen",
            action="store_true",
            help="with --activate: leave the active version alone when staff chose it (start-up scripts use this, "
            "so a restart never undoes an admin's activation)",
        )
        parser.add_argument(
            "--no-copy",
            action="store_true",
            help="reference the folder in place instead of copying it into HEMO_MODEL_STORE_DIR",
        )

    def handle(self, *args, path: Path, activate: bool, no_copy: bool, unless_chosen: bool, **options):
        try:
            model_version, created = model_version_register(
                path=path, activate=activate, copy=not no_copy, unless_chosen=unless_chosen
            )
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        state = "registered" if created else "already registered"
        active = " (active)" if model_version.is_active else ""
        self.stdout.write(f"{model_version} {state}{active}: {model_version.path}")
