from __future__ import annotations

import django_filters

from hemoplatform.api_support import StrictBooleanFilter, UTCDateTimeFilter
from inference.models import Prediction, PredictionStatus


class PredictionFilter(django_filters.FilterSet):
    case = django_filters.UUIDFilter(field_name="scan__case_id", help_text="Case id.")
    scan = django_filters.UUIDFilter(field_name="scan_id", help_text="Scan id.")
    status = django_filters.ChoiceFilter(choices=PredictionStatus.choices)
    label = StrictBooleanFilter(help_text="true: hemorrhage, false: none (unfinished predictions have none).")
    model_version = django_filters.UUIDFilter(field_name="model_version_id", help_text="Model version id.")
    model_version_name = django_filters.CharFilter(
        field_name="model_version__version", help_text="Model version string, e.g. 1.0.0."
    )
    created_after = UTCDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created", lookup_expr="lte")

    class Meta:
        model = Prediction
        fields = ["status", "label"]
