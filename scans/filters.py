"""Filters of a list of scans (django-filter): one FilterSet for the history page and for
``GET /api/v1/scans`` (its filter backend, which also puts them in the OpenAPI schema).

The page applies the filters that are valid and shows an error beside the others; the API
answers 400 with a message per bad parameter.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from .models import Category, Scan, ScanStatus

UNCLASSIFIED = "none"  # the category filter's value for scans without a category
SEARCH_MAX_LENGTH = 100


def category_choices() -> list[tuple[str, str]]:
    """The categories by code, named in the active language (read when the form is used, so
    the schema is generated without the database)."""
    name = "middle_en" if translation.get_language() == "en" else "middle_ko"
    categories = Category.objects.order_by("position", "code").values_list("code", name)
    return [*categories, (UNCLASSIFIED, _("Not classified"))]


class ScanFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("date_from"), cleaned.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", _("The end date is before the start date."))
        return cleaned


class ScanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        label=_("Status"), choices=ScanStatus.choices, empty_label=_("All")
    )
    category = django_filters.ChoiceFilter(
        label=_("Category"),
        choices=category_choices,
        empty_label=_("All"),
        method="filter_category",
        help_text="A category code (GET /api/v1/categories), or `none` for scans without one.",
    )
    # days in the site's time zone (Asia/Seoul), both ends included
    date_from = django_filters.DateFilter(
        label=_("From"),
        field_name="created_at",
        lookup_expr="date__gte",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Scans created on or after this day (YYYY-MM-DD, Asia/Seoul).",
    )
    date_to = django_filters.DateFilter(
        label=_("To"),
        field_name="created_at",
        lookup_expr="date__lte",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Scans created on or before this day (YYYY-MM-DD, Asia/Seoul).",
    )
    q = django_filters.CharFilter(
        label=_("Search"),
        method="search",
        max_length=SEARCH_MAX_LENGTH,
        widget=forms.TextInput(attrs={"type": "search", "autocomplete": "off"}),
        help_text="Words in the hint or the category's name (Korean or English).",
    )

    class Meta:
        model = Scan
        fields: list[str] = []  # the filters above, nothing generated
        form = ScanFilterForm

    def filter_category(self, scans: QuerySet, name: str, value: str) -> QuerySet:
        if value == UNCLASSIFIED:
            return scans.filter(category__isnull=True)
        return scans.filter(category__code=value)

    def search(self, scans: QuerySet, name: str, value: str) -> QuerySet:
        for word in value.split():
            scans = scans.filter(
                Q(hint__icontains=word)
                | Q(category__middle_ko__icontains=word)
                | Q(category__middle_en__icontains=word)
            )
        return scans

    def has_filters(self) -> bool:
        """Whether the request asked for any filter (the page then offers to clear them)."""
        return self.is_bound and any(self.data.get(name) for name in self.filters)
