from django import forms
from django.utils.translation import gettext_lazy as _


class NotificationPreferencesForm(forms.Form):
    email_on_scan_completed = forms.BooleanField(
        label=_("E-mail me when a scan is finished"), required=False
    )
    email = forms.EmailField(
        label=_("E-mail address"),
        required=False,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )

    def clean(self):
        cleaned = super().clean()
        # an opt-in without an address would silently send nothing
        if cleaned.get("email_on_scan_completed") and not cleaned.get("email"):
            self.add_error("email", _("Enter the address the e-mails should go to."))
        return cleaned
