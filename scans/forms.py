"""Forms of the case pages. They only collect and show input: validation that matters (patient reference, upload
content) lives in scans.models / scans.services, which the views call."""

from __future__ import annotations

from django import forms
from django.conf import settings

from inference.models import PredictionStatus
from scans.models import Case, validate_patient_ref
from scans.services import MB

PATIENT_REF_HELP = (
    "A pseudonymous code such as HOSP-000123 (letters, digits, '.', '_' or '-', with at least one digit). "
    "Never enter a patient's name, birth date or record number from another system."
)


class CaseCreateForm(forms.Form):
    patient_ref = forms.CharField(
        label="Pseudonymous patient reference",
        max_length=32,
        validators=[validate_patient_ref],
        help_text=PATIENT_REF_HELP,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "HOSP-000123"}),
    )
    title = forms.CharField(
        label="Title",
        max_length=200,
        required=False,
        help_text="A short description, e.g. “Head CT after fall”. No names.",
    )
    notes = forms.CharField(
        label="Clinical notes",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional context for colleagues. Do not write identifying details.",
    )


class CaseEditForm(forms.ModelForm):
    """Title and notes; the patient reference is fixed once the case exists."""

    class Meta:
        model = Case
        fields = ["title", "notes"]
        widgets = {"notes": forms.Textarea(attrs={"rows": 4})}
        help_texts = {
            "title": "A short description, e.g. “Head CT after fall”. No names.",
            "notes": "Optional context for colleagues. Do not write identifying details.",
        }


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class UploadForm(forms.Form):
    """Renders the file picker. The files themselves are checked by scans.services.scan_ingest (one place for
    pages and API), so this form declares no validation of its own."""

    files = forms.FileField(
        label="CT image or DICOM series",
        required=False,
        # No "accept" filter: DICOM files often have no extension, and the type is detected from content anyway.
        widget=MultipleFileInput(),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_bytes = settings.HEMO_MAX_UPLOAD_MB * MB  # all files of one upload together (scans.services)
        self.fields["files"].help_text = (
            f"One PNG or JPEG slice, the DICOM files of one CT series (or one multi-frame Enhanced CT file), or a "
            f"ZIP of a series "
            f"(up to {settings.HEMO_MAX_UPLOAD_MB} MB). Identifying DICOM tags are removed before storage; text "
            "burnt into images cannot be removed, so do not upload images that show names. Prefer DICOM: the "
            "platform windows it as the model was trained (40/120), and so it does a 16-bit PNG of CT numbers (HU, "
            "HU + 1024 or HU + 32768); a PNG or JPEG exported in a narrower window (such as a stroke window 40/40) "
            "makes the model miss bleeds."
        )


PREDICTION_STATUS_CHOICES = [("", "Any status"), *PredictionStatus.choices, ("none", "Not analysed")]
LABEL_CHOICES = [("", "Any result"), ("positive", "Hemorrhage suspected"), ("negative", "No hemorrhage detected")]


class DashboardFilterForm(forms.Form):
    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.SearchInput(attrs={"placeholder": "Patient reference or title"}),
    )
    status = forms.ChoiceField(label="Latest prediction", required=False, choices=PREDICTION_STATUS_CHOICES)
    label = forms.ChoiceField(label="Result", required=False, choices=LABEL_CHOICES)
