from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .images import validate_scan_image


class ScanUploadForm(forms.Form):
    image = forms.FileField(
        label=_("Photo"),
        validators=[validate_scan_image],
        widget=forms.ClearableFileInput(
            attrs={"accept": "image/jpeg,image/png,image/webp,image/gif", "capture": "environment"}
        ),
    )
    hint = forms.CharField(
        label=_("Hint (optional)"),
        required=False,
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        widget=forms.TextInput(attrs={"placeholder": "투명 페트병, 라벨 있음"}),
    )
