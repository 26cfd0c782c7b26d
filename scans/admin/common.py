"""What the admin pages share: JSON shown readably, the re-enqueued message, read-only pages."""

import json

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import ngettext


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
