"""The admin of what runs the pipeline keeps: the caches of paid calls, the task ledger and
dead letters (redrive, dismiss)."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import services
from ..models import (
    AnswerCacheEntry,
    DeadLetter,
    TaskAttempt,
    VisionCacheEntry,
)
from .common import LargeTableAdmin, ReadOnlyAdmin, pretty_json, recent_values_filter


@admin.register(VisionCacheEntry)
class VisionCacheEntryAdmin(admin.ModelAdmin):
    list_display = ("image_sha256", "provider", "hits", "created_at", "last_hit_at")
    list_filter = ("provider",)
    search_fields = ("image_sha256", "key")
    readonly_fields = (
        "key",
        "provider",
        "image_sha256",
        "hits",
        "created_at",
        "last_hit_at",
        "classification_pretty",
    )
    exclude = ("classification",)

    @admin.display(description="classification")
    def classification_pretty(self, entry):
        return pretty_json(entry.classification)


@admin.register(AnswerCacheEntry)
class AnswerCacheEntryAdmin(admin.ModelAdmin):
    list_display = ("category_code", "situation_tags", "language", "provider", "hits", "created_at")
    list_filter = ("language", "provider", "category_code")
    search_fields = ("key", "category_code")
    readonly_fields = (
        "key",
        "provider",
        "category_code",
        "situation_tags",
        "language",
        "hits",
        "created_at",
        "last_hit_at",
        "answer_pretty",
    )
    exclude = ("answer",)

    @admin.display(description="answer")
    def answer_pretty(self, entry):
        return pretty_json(entry.answer)


@admin.register(TaskAttempt)
class TaskAttemptAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """Every attempt of every pipeline task (django-celery-results keeps only the last)."""

    list_display = (
        "started_at",
        "task_name",
        "attempt",
        "outcome",
        "exception_class",
        "duration_ms",
        "worker",
        "queue",
        "scan_link",
    )
    list_filter = (
        "outcome",
        recent_values_filter("task_name"),
        "step",
        "redelivered",
        recent_values_filter("worker"),
        ("started_at", admin.DateFieldListFilter),
    )
    search_fields = ("task_id", "scan__id", "exception_class", "exception_message")
    list_select_related = ("scan",)

    @admin.display(description="scan")
    def scan_link(self, attempt):
        if attempt.scan_id is None:
            return "-"
        return format_html(
            "<a href='{}'>{}</a>",
            reverse("admin:scans_scan_change", args=[attempt.scan_id]),
            attempt.scan_id,
        )


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "task_name",
        "reason_code",
        "scan",
        "redriven_at",
        "redriven_by",
        "resolved_at",
        "resolved_by",
    )
    list_filter = (
        "reason_code",
        "task_name",
        ("redriven_at", admin.EmptyFieldListFilter),
        ("resolved_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("task_id", "scan__id", "reason")
    readonly_fields = (
        "scan",
        "task_id",
        "task_name",
        "step",
        "reason_code",
        "reason",
        "created_at",
        "redriven_at",
        "redriven_by",
        "resolved_at",
        "resolved_by",
    )
    actions = ["redrive_selected", "dismiss_selected"]

    def has_add_permission(self, request):
        return False

    def has_retry_permission(self, request):
        return request.user.has_perm("scans.retry_scan")

    @admin.action(
        description=gettext_lazy("Redrive selected dead letters (resume their scans)"),
        permissions=["retry"],
    )
    def redrive_selected(self, request, queryset):
        report = services.redrive_dead_letters(actor=request.user.get_username(), letters=queryset)
        self.message_user(
            request,
            _("%(count)d scan(s) re-enqueued.") % {"count": report.retried},
            messages.SUCCESS,
        )
        if report.permanent:
            codes = ", ".join(f"{code} ({n})" for code, n in sorted(report.permanent.items()))
            self.message_user(
                request,
                _(
                    "Skipped %(count)d scan(s) whose failure is permanent: %(codes)s. A redrive "
                    "would fail them again; retry them from the scan list if you are sure."
                )
                % {"count": sum(report.permanent.values()), "codes": codes},
                messages.WARNING,
            )
        if report.without_scan:
            self.message_user(
                request,
                _(
                    "Skipped %(count)d dead letter(s) that name no scan: nothing to redrive. "
                    "Dismiss them once reviewed."
                )
                % {"count": report.without_scan},
                messages.WARNING,
            )
        if report.running:
            self.message_user(
                request,
                _("Skipped %(count)d dead letter(s) of scans queued or running again.")
                % {"count": report.running},
                messages.INFO,
            )
        if report.resolved:
            self.message_user(
                request,
                _("%(count)d dead letter(s) belonged to completed scans: resolved.")
                % {"count": report.resolved},
                messages.INFO,
            )

    @admin.action(
        description=gettext_lazy("Dismiss selected dead letters (reviewed; nothing to redrive)"),
        permissions=["retry"],
    )
    def dismiss_selected(self, request, queryset):
        dismissed = queryset.pending().update(
            resolved_at=timezone.now(), resolved_by=request.user.get_username()
        )
        self.message_user(
            request,
            _("%(count)d dead letter(s) dismissed.") % {"count": dismissed},
            messages.SUCCESS,
        )
