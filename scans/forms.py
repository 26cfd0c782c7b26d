from django import forms
from django.conf import settings
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from .images import PHOTO_CONTENT_TYPES, validate_scan_image
from .models import Category, ScanStatus

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
    )


UNCLASSIFIED = "none"


class HistoryFilterForm(forms.Form):
    """Filters of the history page (GET): status, category and a date range."""

    status = forms.ChoiceField(label=_("Status"), required=False)
    category = forms.ChoiceField(label=_("Category"), required=False)
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args, language: str = "ko", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", _("All")), *ScanStatus.choices]
        name = "middle_en" if language == "en" else "middle_ko"
        categories = Category.objects.order_by("position", "code").values_list("code", name)
        self.fields["category"].choices = [
            ("", _("All")),
            *categories,
            (UNCLASSIFIED, _("Not classified")),
        ]

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return cleaned

    def has_filters(self) -> bool:
        return any(self.data.get(name) for name in self.fields)

    def filter(self, scans: QuerySet) -> QuerySet:
        data = self.cleaned_data
        if data.get("status"):
            scans = scans.filter(status=data["status"])
        if data.get("category") == UNCLASSIFIED:
            scans = scans.filter(category__isnull=True)
        elif data.get("category"):
            scans = scans.filter(category__code=data["category"])
        # dates are days in the site's time zone (Asia/Seoul)
        if data.get("date_from"):
            scans = scans.filter(created_at__date__gte=data["date_from"])
        if data.get("date_to"):
            scans = scans.filter(created_at__date__lte=data["date_to"])
        return scans
