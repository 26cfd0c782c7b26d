from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from .images import PHOTO_CONTENT_TYPES, validate_scan_image

# image/* opens the camera or the gallery on phones; the extensions make HEIC and AVIF files
# choosable on desktops whose system does not count them as images. The content check on the
# server decides what is accepted (JPEG, PNG, WebP, GIF, AVIF, HEIC/HEIF).
PHOTO_INPUT_ACCEPT = "image/*,.heic,.heif,.avif"


class ScanUploadForm(forms.Form):
    # the file types the page's script lets through before uploading (static/upload.js)
    content_types = " ".join(PHOTO_CONTENT_TYPES)

    image = forms.FileField(
        label=_("Photo"),
        validators=[validate_scan_image],
        # capture: the rear camera first
        widget=forms.ClearableFileInput(
            attrs={"accept": PHOTO_INPUT_ACCEPT, "capture": "environment"}
        ),
        error_messages={"required": _("Choose or take a photo of the item.")},
    )
    hint = forms.CharField(
        label=_("Hint (optional)"),
        required=False,
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        help_text=_("What it is or what it is made of, and whether a label or cap is still on."),
        # the example is Korean in both languages: hints are matched against Korean rules too
        widget=forms.TextInput(
            attrs={"placeholder": "투명 페트병, 라벨 있음", "autocomplete": "off"}
        ),
        error_messages={
            "required": _(
                "Describe the item in the hint: this server cannot see photos (offline mode)."
            )
        },
    )

    def __init__(self, *args, photo_is_seen: bool = True, **kwargs) -> None:
        """``photo_is_seen``: the vision step looks at the photo. When it does not (the offline
        provider), a photo alone cannot be recognised, so the hint is required."""
        super().__init__(*args, **kwargs)
        if not photo_is_seen:
            hint = self.fields["hint"]
            hint.required = True
            hint.label = _("Hint (required)")
            hint.help_text = _(
                "Name the item, e.g. 투명 페트병, 라벨 있음 · 깨진 유리컵 · 다 쓴 건전지 · "
                "배달 음식 플라스틱 용기."
            )
            hint.widget.attrs["required"] = "required"


class HintForm(forms.Form):
    """A hint for a scan that asked which one it is: the photo is recognised again with it."""

    hint = forms.CharField(
        label=_("Or describe it and scan again"),
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        error_messages={"required": _("Describe the item in the hint.")},
    )
