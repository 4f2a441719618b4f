"""Files follow their rows: when a slice row is deleted (scan or case deleted, in the admin or a service), its files
are removed once the deletion commits, so a rolled-back deletion keeps them."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from scans.models import Slice, private_storage


def delete_files_on_commit(*names: str) -> None:
    names = tuple(name for name in names if name)

    def delete() -> None:
        storage = private_storage()
        for name in names:
            try:
                storage.delete(name)
            except OSError:
                pass

    transaction.on_commit(delete)


@receiver(post_delete, sender=Slice, dispatch_uid="scans.delete_slice_files")
def delete_slice_files(sender, instance: Slice, **kwargs):
    delete_files_on_commit(instance.file.name, instance.thumbnail.name, instance.preview.name)
