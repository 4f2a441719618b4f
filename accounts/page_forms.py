"""Forms of the audit trail and members pages."""

from __future__ import annotations

from django import forms

from accounts.models import AuditAction, Role


class AuditEventFilterForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    action = forms.ChoiceField(
        label="Action",
        required=False,
        choices=[("", "Any action"), *AuditAction.choices],
    )
    actor = forms.ChoiceField(label="Actor", required=False)
    target = forms.CharField(label="Target id", required=False, max_length=64)

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["actor"].choices = [("", "Anyone"), *((str(u.pk), u.username) for u in members)]


class MemberAddForm(forms.Form):
    username = forms.CharField(label="Username", max_length=150)
    email = forms.EmailField(label="Email address", help_text="The new member gets a link here to set a password.")
    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.CLINICIAN)
