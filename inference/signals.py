from django.db.models.signals import post_delete
from django.dispatch import receiver

from inference.models import HeatMap
from scans.signals import delete_files_on_commit


@receiver(post_delete, sender=HeatMap, dispatch_uid="inference.delete_heatmap_file")
def delete_heatmap_file(sender, instance: HeatMap, **kwargs):
    delete_files_on_commit(instance.image.name)
