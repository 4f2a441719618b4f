from django.conf import settings
from django.core.management.base import BaseCommand

from inference.services import prediction_requeue_stale


class Command(BaseCommand):
    help = "Enqueue again predictions that waited too long (lost message) or outlived the task time limit."

    def add_arguments(self, parser):
        parser.add_argument(
            "--queued-for",
            type=int,
            default=settings.HEMO_REQUEUE_QUEUED_FOR_S,
            help="seconds a queued prediction may wait (default HEMO_REQUEUE_QUEUED_FOR_S)",
        )

    def handle(self, *args, queued_for: int, **options):
        ids = prediction_requeue_stale(queued_for_s=queued_for)
        self.stdout.write(f"re-enqueued {len(ids)} prediction(s)")
