from __future__ import annotations

import django_filters
from django.db.models import Q

from hemoplatform.api_support import UTCDateTimeFilter
from scans.models import Case, Scan, ScanKind


class CaseFilter(django_filters.FilterSet):
    patient_ref = django_filters.CharFilter(help_text="Exact patient reference.")
    q = django_filters.CharFilter(method="search", help_text="Text in the patient reference or the title.")
    created_after = UTCDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created", lookup_expr="lte")

    class Meta:
        model = Case
        fields = ["patient_ref"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(patient_ref__icontains=value) | Q(title__icontains=value))


class ScanFilter(django_filters.FilterSet):
    case = django_filters.UUIDFilter(field_name="case_id")
    kind = django_filters.ChoiceFilter(choices=ScanKind.choices)
    created_after = UTCDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created", lookup_expr="lte")

    class Meta:
        model = Scan
        fields = ["case", "kind"]
