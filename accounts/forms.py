from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms

from accounts.services import user_signup_complete


class SignupForm(AllauthSignupForm):
    """allauth's sign-up plus the name of the organization the new user founds (see user_signup_complete)."""

    organization_name = forms.CharField(
        max_length=200,
        label="Organization",
        help_text="Your hospital or team. To join an existing organization, ask its administrator to add you.",
    )

    def custom_signup(self, request, user):
        user_signup_complete(user=user, organization_name=self.cleaned_data["organization_name"], request=request)
