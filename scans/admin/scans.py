"""The admin of scans: the scan (with its attempts and dead letters), batches and events."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django_celery_results.models import TaskResult

from .. import services
from ..models import (
    DeadLetter,
    Scan,
    ScanBatch,
    ScanEvent,
    ScanStatus,
    TaskAttempt,
)
from ..task_history import shown_state, with_last_attempt
from .common import (
    LargeTableAdmin,
    ReadOnlyAdmin,
    pretty_json,
    recent_values_filter,
    retried_message,
)


class TaskAttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    can_delete = False
    fields = (
        "started_at",
        "step",
        "attempt",
        "outcome",
        "exception_class",
        "exception_message",
        "duration_ms",
        "worker",
        "redelivered",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class DeadLetterInline(admin.TabularInline):
    model = DeadLetter
    extra = 0
    can_delete = False
    fields = ("created_at", "task_name", "reason_code", "reason", "redriven_at", "redriven_by")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Scan)
class ScanAdmin(LargeTableAdmin):
    inlines = [TaskAttemptInline, DeadLetterInline]
    actions = ["retry_selected", "regenerate_thumbnails"]
    list_display = (
        "id",
        "owner",
        "status",
        "step",
        "progress",
        "category",
        "outcome",
        "provider",
        "created_at",
    )
    list_filter = (
        "status",
        "step",
        "category",
        "outcome",
        recent_values_filter("provider", latest="-created_at"),
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("id", "owner__username", "hint", "error_code", "celery_root_id")
    list_select_related = ("owner", "category")
    readonly_fields = (
        "id",
        "owner",
        "image",
        "hint",
        "language",
        "status",
        "step",
        "progress",
        "outcome",
        "category",
        "provider",
        "error_code",
        "error_message",
        "celery_root_id",
        "thumbnail",
        "image_sha256",
        "image_prepared_at",
        "vision_model",
        "answer_model",
        "prompt_version",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_usd",
        "vision_cache_hit",
        "answer_cache_hit",
        "usage_pretty",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "classification_pretty",
        "choices_pretty",
        "rules_pretty",
        "answer_pretty",
        "task_results",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "owner",
                    "image",
                    "thumbnail",
                    "image_sha256",
                    "image_prepared_at",
                    "hint",
                    "language",
                )
            },
        ),
        (
            "State",
            {"fields": ("status", "step", "progress", "outcome", "error_code", "error_message")},
        ),
        (
            "Result",
            {
                "fields": (
                    "category",
                    "provider",
                    "classification_pretty",
                    "choices_pretty",
                    "rules_pretty",
                    "answer_pretty",
                )
            },
        ),
        (
            "Cost",
            {
                "fields": (
                    "vision_model",
                    "answer_model",
                    "prompt_version",
                    "vision_cache_hit",
                    "answer_cache_hit",
                    "input_tokens",
                    "cached_input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "usage_pretty",
                )
            },
        ),
        ("Tasks", {"fields": ("celery_root_id", "task_results")}),
        ("Times", {"fields": ("created_at", "updated_at", "started_at", "finished_at")}),
    )

    def has_add_permission(self, request):
        return False  # scans come from uploads, not from the admin

    def has_retry_permission(self, request):
        return request.user.has_perm("scans.retry_scan")

    @admin.action(
        description=gettext_lazy("Retry selected scans (resume from the failed step)"),
        permissions=["retry"],
    )
    def retry_selected(self, request, queryset):
        # counted before the retry: with the list filtered by status=failed, the same queryset
        # afterwards no longer holds the scans just re-enqueued ("-1 skipped")
        selected = queryset.count()
        failed = list(queryset.filter(status=ScanStatus.FAILED).values_list("id", flat=True))
        retried = services.retry_scans(failed, actor=request.user.get_username())
        for scan in Scan.objects.filter(pk__in=failed, status=ScanStatus.QUEUED):
            self.log_change(request, scan, "Retried from the admin")
        skipped = selected - retried
        self.message_user(request, retried_message(retried), messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                _("%(count)d skipped: not failed, or already retried by someone else.")
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.action(
        description=gettext_lazy("Regenerate thumbnails (Canvas: chunks of starmap, in parallel)")
    )
    def regenerate_thumbnails(self, request, queryset):
        ids = list(queryset.exclude(image_prepared_at=None).values_list("id", flat=True))
        group_id = services.regenerate_thumbnails(ids)
        self.message_user(
            request,
            ngettext(
                "Regenerating %(count)d thumbnail (group %(group)s).",
                "Regenerating %(count)d thumbnails (group %(group)s).",
                len(ids),
            )
            % {"count": len(ids), "group": group_id},
            messages.SUCCESS,
        )

    @admin.display(description="tokens", ordering="input_tokens")
    def total_tokens(self, scan):
        return scan.input_tokens + scan.output_tokens

    @admin.display(description="usage per step")
    def usage_pretty(self, scan):
        return pretty_json(scan.usage)

    @admin.display(description="classification")
    def classification_pretty(self, scan):
        return pretty_json(scan.classification)

    @admin.display(description="choices offered")
    def choices_pretty(self, scan):
        return pretty_json(scan.choices)

    @admin.display(description="matched rules")
    def rules_pretty(self, scan):
        return pretty_json(scan.matched_rules)

    @admin.display(description="answer")
    def answer_pretty(self, scan):
        return pretty_json(scan.answer)

    @admin.display(description="task results")
    def task_results(self, scan):
        # every task of the chain carries the scan id as its only argument
        results = with_last_attempt(
            TaskResult.objects.filter(task_args__contains=str(scan.id))
        ).order_by("date_created")
        if not results:
            return "-"
        return format_html_join(
            "",
            "<div><a href='{}'>{}</a> {} · {}</div>",
            (
                (
                    reverse("admin:django_celery_results_taskresult_change", args=[r.pk]),
                    r.task_name,
                    shown_state(r),
                    r.task_id,
                )
                for r in results
            ),
        )


@admin.register(ScanBatch)
class ScanBatchAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "created_at", "completed_at", "chord_id")
    list_filter = ("status",)
    readonly_fields = (
        "id",
        "owner",
        "status",
        "chord_id",
        "dispatched_at",
        "created_at",
        "completed_at",
        "summary_pretty",
    )
    exclude = ("summary",)

    def has_add_permission(self, request):
        return False

    @admin.display(description="summary")
    def summary_pretty(self, batch):
        return pretty_json(batch.summary)


@admin.register(ScanEvent)
class ScanEventAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """The event store: what was published to eco2.events, and what is still owed."""

    list_display = ("occurred_at", "type", "scan", "published_at")
    list_filter = ("type", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "scan__id")
    list_select_related = ("scan",)  # the scan column: no query per row
    ordering = ("-occurred_at",)  # newest first (index event_occurred)
    readonly_fields = ("id", "type", "scan", "occurred_at", "published_at", "payload_pretty")
    exclude = ("payload",)

    @admin.display(description="payload")
    def payload_pretty(self, event):
        return pretty_json(event.payload)
