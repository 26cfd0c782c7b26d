"""What the admin pages share: JSON shown readably, the re-enqueued message, read-only pages,
and what keeps the lists of the large tables (scans, attempts, events, task history) as fast
with millions of rows as with thousands."""

import json

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import ngettext

from eco2.pagination import BoundedCountPaginator


def pretty_json(value) -> str:
    if value in (None, ""):
        return "-"
    return format_html(
        "<pre style='white-space:pre-wrap'>{}</pre>",
        json.dumps(value, ensure_ascii=False, indent=2),
    )


def retried_message(count: int) -> str:
    return ngettext("%(count)d scan re-enqueued.", "%(count)d scans re-enqueued.", count) % {
        "count": count
    }


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the system (ledger, events, task history): look, never edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LargeTableAdmin(admin.ModelAdmin):
    """A list of a table that grows with every scan: a bounded count, no second count of the
    whole table, and no date hierarchy (its years and months are a scan of the whole table;
    a DateFieldListFilter offers the periods without a query)."""

    paginator = BoundedCountPaginator
    show_full_result_count = False
    date_hierarchy = None


def recent_values_filter(field: str, *, latest: str = "-pk", rows: int = 500) -> type:
    """A list filter by ``field`` whose choices are the values of the latest ``rows`` rows (by
    ``latest``, an indexed order): the admin's own filter of a plain field lists its distinct
    values over the whole table. An older value is still filtered on by its URL."""

    class RecentValuesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request, model_admin):
            recent = model_admin.model._default_manager.order_by(latest)[:rows]
            values = {value for value in recent.values_list(field, flat=True) if value}
            return [(value, value) for value in sorted(values)]

        def queryset(self, request, queryset):
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    RecentValuesFilter.__name__ = f"Recent{field.title().replace('_', '')}Filter"
    return RecentValuesFilter


def choices_filter(field: str, choices: list[tuple[str, str]]) -> type:
    """A list filter by ``field`` offering fixed ``choices`` (the admin's own filter of a field
    without declared choices lists its distinct values: a scan of the whole table)."""

    class ChoicesFilter(admin.SimpleListFilter):
        title = field.replace("_", " ")
        parameter_name = field

        def lookups(self, request, model_admin):
            return choices

        def queryset(self, request, queryset):
            value = self.value()
            return queryset.filter(**{field: value}) if value else queryset

    ChoicesFilter.__name__ = f"{field.title().replace('_', '')}ChoicesFilter"
    return ChoicesFilter
