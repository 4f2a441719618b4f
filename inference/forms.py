"""Filter forms of the prediction audit page."""

from __future__ import annotations

from django import forms

from inference.models import PredictionStatus

LABEL_CHOICES = [("", "Any result"), ("positive", "Hemorrhage suspected"), ("negative", "No hemorrhage detected")]


class PredictionAuditFilterForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    status = forms.ChoiceField(label="Status", required=False, choices=[("", "Any status"), *PredictionStatus.choices])
    label = forms.ChoiceField(label="Result", required=False, choices=LABEL_CHOICES)
    user = forms.ChoiceField(label="Requested by", required=False)
    input_check = forms.ChoiceField(
        label="Input",
        required=False,
        choices=[("", "Any input"), ("warn", "Unusual input (warned)")],
    )

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["user"].choices = [("", "Anyone"), *((str(u.pk), u.username) for u in members)]
