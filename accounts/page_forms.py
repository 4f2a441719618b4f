"""Filter form of the audit trail page."""

from __future__ import annotations

from django import forms

from accounts.models import AuditAction


class AuditEventFilterForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    action = forms.ChoiceField(
        label="Action",
        required=False,
        choices=[("", "Any action"), *AuditAction.choices, ("case.update", "Case updated")],
    )
    actor = forms.ChoiceField(label="Actor", required=False)
    target = forms.CharField(label="Target id", required=False, max_length=64)

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["actor"].choices = [("", "Anyone"), *((str(u.pk), u.username) for u in members)]
