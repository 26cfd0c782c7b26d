import json

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django_celery_results.models import TaskResult

from .models import Category, DisposalStep, Exclusion, Item, Scan, SituationTag, VisionCacheEntry


def pretty_json(value) -> str:
    if value in (None, ""):
        return "-"
    return format_html(
        "<pre style='white-space:pre-wrap'>{}</pre>",
        json.dumps(value, ensure_ascii=False, indent=2),
    )


@admin.register(Scan)
class ScanAdmin(admin.ModelAdmin):
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
