"""Prediction.requested: when a prediction was last asked for (its creation, or the latest retry); existing rows get
their creation time, which is what they showed until now. Prediction.task_id: the Celery task of the run that
marked it running (a redelivery of that task takes the row over at once)."""

import django.utils.timezone
from django.db import migrations, models


def requested_is_created(apps, schema_editor):
    Prediction = apps.get_model("inference", "Prediction")
    Prediction.objects.update(requested=models.F("created"))


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_prediction_slab_reading"),
    ]

    operations = [
        migrations.AddField(
            model_name="prediction",
            name="requested",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(requested_is_created, migrations.RunPython.noop),
        migrations.AddField(
            model_name="prediction",
            name="task_id",
            field=models.CharField(blank=True, max_length=255),
        ),
    ]
