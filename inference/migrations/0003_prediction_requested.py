"""Prediction.requested: when a prediction was last asked for (its creation, or the latest retry). Existing rows get
their creation time, which is what they showed until now."""

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
    ]
