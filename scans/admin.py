import json

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_results.models import TaskResult

from . import services
from .models import (
    Category,
    DeadLetter,
    DisposalStep,
    Exclusion,
    Item,
    Scan,
    ScanStatus,
    SituationTag,
    TaskAttempt,
    VisionCacheEntry,
)


def pretty_json(value) -> str:
    if value in (None, ""):
        return "-"
    return format_html(
        "<pre style='white-space:pre-wrap'>{}</pre>",
        json.dumps(value, ensure_ascii=False, indent=2),
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
class ScanAdmin(admin.ModelAdmin):
    inlines = [TaskAttemptInline, DeadLetterInline]
    actions = ["retry_selected"]
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
        "provider",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("id", "owner__username", "hint", "error_code", "celery_root_id")
    date_hierarchy = "created_at"
    list_select_related = ("owner", "category")
    readonly_fields = (
        "id",
        "owner",
        "image",
        "hint",
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
        "usage_pretty",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "classification_pretty",
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
        description="Retry selected scans (resume from the failed step)", permissions=["retry"]
    )
    def retry_selected(self, request, queryset):
        failed = list(queryset.filter(status=ScanStatus.FAILED).values_list("id", flat=True))
        retried = services.retry_scans(failed, actor=request.user.get_username())
        for scan in Scan.objects.filter(pk__in=failed, status=ScanStatus.QUEUED):
            self.log_change(request, scan, "Retried from the admin")
        skipped = queryset.count() - retried
        self.message_user(request, f"{retried} scan(s) re-enqueued.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: not failed, or already retried by someone else.",
                messages.WARNING,
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

    @admin.display(description="matched rules")
    def rules_pretty(self, scan):
        return pretty_json(scan.matched_rules)

    @admin.display(description="answer")
    def answer_pretty(self, scan):
        return pretty_json(scan.answer)

    @admin.display(description="task results")
    def task_results(self, scan):
        # every task of the chain carries the scan id as its only argument
        results = TaskResult.objects.filter(task_args__contains=str(scan.id)).order_by(
            "date_created"
        )
        if not results:
            return "-"
        return format_html_join(
            "",
            "<div><a href='{}'>{}</a> {} · {}</div>",
            (
                (
                    reverse("admin:django_celery_results_taskresult_change", args=[r.pk]),
                    r.task_name,
                    r.status,
                    r.task_id,
                )
                for r in results
            ),
        )


class DisposalStepInline(admin.TabularInline):
    model = DisposalStep
    extra = 0
    fields = ("position", "tag", "text_ko", "text_en")


class ItemInline(admin.TabularInline):
    model = Item
    extra = 0
    fields = ("name_ko", "name_en", "aliases")


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    fk_name = "category"
    extra = 0
    fields = ("name_ko", "name_en", "aliases", "goes_to", "note_ko", "note_en")


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("code", "middle_ko", "middle_en", "major_ko", "kind", "position")
    list_filter = ("kind",)
    search_fields = ("code", "middle_ko", "middle_en", "items__name_ko", "items__name_en")
    inlines = [DisposalStepInline, ItemInline, ExclusionInline]


@admin.register(SituationTag)
class SituationTagAdmin(admin.ModelAdmin):
    list_display = ("code", "group", "name_ko", "name_en", "fix_ko")
    list_filter = ("group",)
    search_fields = ("code", "name_ko", "name_en")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("name_ko", "name_en", "category")
    list_filter = ("category",)
    search_fields = ("name_ko", "name_en", "aliases")


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


@admin.register(TaskAttempt)
class TaskAttemptAdmin(admin.ModelAdmin):
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
    list_filter = ("outcome", "task_name", "step", "redelivered", "worker")
    search_fields = ("task_id", "scan__id", "exception_class", "exception_message")
    date_hierarchy = "started_at"
    list_select_related = ("scan",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

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
    list_display = ("created_at", "task_name", "reason_code", "scan", "redriven_at", "redriven_by")
    list_filter = ("reason_code", "task_name", ("redriven_at", admin.EmptyFieldListFilter))
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
    )
    actions = ["redrive_selected"]

    def has_add_permission(self, request):
        return False

    def has_retry_permission(self, request):
        return request.user.has_perm("scans.retry_scan")

    @admin.action(
        description="Redrive selected dead letters (resume their scans)", permissions=["retry"]
    )
    def redrive_selected(self, request, queryset):
        pending = queryset.filter(redriven_at=None).exclude(scan=None)
        retried = services.retry_scans(
            list(pending.values_list("scan_id", flat=True)), actor=request.user.get_username()
        )
        pending.update(redriven_at=timezone.now(), redriven_by=request.user.get_username())
        self.message_user(request, f"{retried} scan(s) re-enqueued.", messages.SUCCESS)
