import json
import uuid

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django_celery_results.models import TaskResult

from eco2.queues import SCAN_PIPELINE_TASKS

from . import services
from .models import (
    AnswerCacheEntry,
    Category,
    DeadLetter,
    DisposalStep,
    Exclusion,
    Item,
    Scan,
    ScanBatch,
    ScanEvent,
    ScanStatus,
    SituationTag,
    TaskAttempt,
    TaskRerun,
    VisionCacheEntry,
)
from .task_history import decode_arguments, rerun_task, revoke_tasks


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
    fields = ("position", "tag", "unless_tag", "text_ko", "text_en", "items", "except_items")


class ItemInline(admin.TabularInline):
    model = Item
    extra = 0
    fields = ("name_ko", "name_en", "aliases", "conditions")


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    fk_name = "category"
    extra = 0
    fields = ("name_ko", "name_en", "aliases", "goes_to", "note_ko", "note_en", "conditions")


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
class TaskAttemptAdmin(ReadOnlyAdmin):
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


# --- task history (django-celery-results), with control -------------------------------------
admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskHistoryAdmin(ReadOnlyAdmin):
    """Every task from the moment it was sent: readable arguments, attempts, links to the scan,
    and the controls Flower and django-celery-results lack (re-run, revoke)."""

    list_display = (
        "task_id",
        "task_name",
        "status",
        "worker",
        "queue",
        "retries",
        "date_created",
        "date_done",
        "scan_link",
    )
    list_filter = (
        "status",
        "task_name",
        "worker",
        "periodic_task_name",
        ("date_created", admin.DateFieldListFilter),
    )
    search_fields = ("task_id", "task_name", "task_args", "task_kwargs", "periodic_task_name")
    date_hierarchy = "date_created"
    actions = ["rerun_selected", "revoke_selected", "terminate_selected"]
    fields = (
        "task_id", "task_name", "status", "scan_link", "periodic_task_name", "worker",
        "date_created", "date_started", "date_done", "args_pretty", "kwargs_pretty",
        "result_pretty", "traceback", "attempts_table", "reruns",
    )  # fmt: skip
    readonly_fields = fields  # read-only (ReadOnlyAdmin); the actions below are the controls

    def has_retry_permission(self, request):
        return request.user.has_perm("scans.retry_scan")

    def _attempts(self, result):
        return TaskAttempt.objects.filter(task_id=result.task_id).order_by("started_at")

    @admin.display(description="queue")
    def queue(self, result):
        last = self._attempts(result).last()
        return last.queue if last else "-"

    @admin.display(description="retries")
    def retries(self, result):
        last = self._attempts(result).last()
        return last.attempt - 1 if last else 0

    @admin.display(description="scan")
    def scan_link(self, result):
        if result.task_name not in SCAN_PIPELINE_TASKS:
            return "-"
        try:
            scan_id = str(uuid.UUID(str(decode_arguments(result.task_args, [None])[0])))
        except (ValueError, SyntaxError, IndexError, TypeError):
            return "-"
        return format_html(
            "<a href='{}'>{}</a>", reverse("admin:scans_scan_change", args=[scan_id]), scan_id
        )

    @admin.display(description="args")
    def args_pretty(self, result):
        return pretty_json(_decoded(result.task_args, []))

    @admin.display(description="kwargs")
    def kwargs_pretty(self, result):
        return pretty_json(_decoded(result.task_kwargs, {}))

    @admin.display(description="result")
    def result_pretty(self, result):
        return pretty_json(_decoded(result.result, None))

    @admin.display(description="attempts")
    def attempts_table(self, result):
        rows = self._attempts(result)
        if not rows:
            return "-"
        return format_html_join(
            "",
            "<div>#{} {} · {} · {} · {} ms · {} {}</div>",
            (
                (
                    a.attempt,
                    a.outcome,
                    a.worker,
                    a.queue,
                    a.duration_ms,
                    a.exception_class,
                    a.exception_message,
                )
                for a in rows
            ),
        )

    @admin.display(description="re-runs")
    def reruns(self, result):
        links = [
            (rerun.original_task_id, "re-run of")
            for rerun in TaskRerun.objects.filter(new_task_id=result.task_id)
        ] + [
            (rerun.new_task_id, "re-run as")
            for rerun in TaskRerun.objects.filter(original_task_id=result.task_id)
        ]
        if not links:
            return "-"
        rows = TaskResult.objects.in_bulk([task_id for task_id, _ in links], field_name="task_id")
        return format_html_join(
            "",
            "<div>{} <a href='{}'>{}</a></div>",
            (
                (
                    label,
                    reverse("admin:django_celery_results_taskresult_change", args=[rows[t].pk])
                    if t in rows
                    else "#",
                    t,
                )
                for t, label in links
            ),
        )

    @admin.action(
        description=gettext_lazy("Re-run task (same name and arguments, new id)"),
        permissions=["retry"],
    )
    def rerun_selected(self, request, queryset):
        actor = request.user.get_username()
        for result in queryset:
            try:
                new_id = rerun_task(result, actor=actor)
            except (ValueError, SyntaxError) as exc:
                self.message_user(
                    request,
                    _("%(task)s: its arguments cannot be read (%(error)s).")
                    % {"task": result.task_id, "error": exc},
                    messages.ERROR,
                )
                continue
            self.message_user(
                request,
                _("%(name)s re-run as %(id)s.") % {"name": result.task_name, "id": new_id},
                messages.SUCCESS,
            )

    @admin.action(
        description=gettext_lazy("Revoke (discard if not started)"), permissions=["retry"]
    )
    def revoke_selected(self, request, queryset):
        done = revoke_tasks(list(queryset.values_list("task_id", flat=True)), terminate=False)
        self.message_user(
            request,
            _(
                "Revoked %(count)d task(s); %(waiting)d waiting one(s) marked REVOKED: a worker "
                "discards them when it receives them, and the scan of a scan step is cancelled."
            )
            % {"count": queryset.count(), "waiting": done.waiting},
        )
        if done.running:
            self.message_user(
                request,
                _(
                    "%(count)d had already started and go on: revoking does not stop a running "
                    "task (Terminate does, except for the AI steps)."
                )
                % {"count": len(done.running)},
                messages.WARNING,
            )

    @admin.action(
        description=gettext_lazy("Terminate (revoke, and stop if running: not the AI steps)"),
        permissions=["retry"],
    )
    def terminate_selected(self, request, queryset):
        done = revoke_tasks(list(queryset.values_list("task_id", flat=True)), terminate=True)
        self.message_user(
            request,
            _(
                "Revoked %(count)d task(s); %(waiting)d waiting one(s) marked REVOKED; SIGTERM "
                "sent to %(signalled)d running one(s) (prefork workers); the scan of a scan step "
                "is cancelled."
            )
            % {"count": queryset.count(), "waiting": done.waiting, "signalled": done.signalled},
        )
        if done.cancelled_in_place:
            self.message_user(
                request,
                _(
                    "%(count)d running AI step(s) cannot be stopped: the AI worker runs a threads "
                    "pool, where a task cannot be terminated. Their scans were cancelled instead; "
                    "the provider call in flight finishes and its result is discarded."
                )
                % {"count": done.cancelled_in_place},
                messages.WARNING,
            )


def _decoded(text, empty):
    try:
        return decode_arguments(text, empty)
    except (ValueError, SyntaxError):
        return text


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
class ScanEventAdmin(ReadOnlyAdmin):
    """The event store: what was published to eco2.events, and what is still owed."""

    list_display = ("occurred_at", "type", "scan", "published_at")
    list_filter = ("type", ("published_at", admin.EmptyFieldListFilter))
    search_fields = ("id", "scan__id")
    readonly_fields = ("id", "type", "scan", "occurred_at", "published_at", "payload_pretty")
    exclude = ("payload",)

    @admin.display(description="payload")
    def payload_pretty(self, event):
        return pretty_json(event.payload)
