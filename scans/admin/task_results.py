"""The task history (django-celery-results' TaskResult) with its controls: re-run, revoke,
terminate."""

import uuid

from celery import states
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_celery_results.models import TaskResult

from eco2.queues import SCAN_PIPELINE_TASKS

from ..models import (
    TaskAttempt,
    TaskRerun,
)
from ..task_history import (
    decode_arguments,
    rerun_task,
    revoke_tasks,
    shown_state,
    with_last_attempt,
    with_state,
)
from .common import (
    LargeTableAdmin,
    ReadOnlyAdmin,
    pretty_json,
    recent_values_filter,
)

# --- task history (django-celery-results), with control -------------------------------------
admin.site.unregister(TaskResult)


class StateFilter(admin.SimpleListFilter):
    """By the state the history shows (a pipeline step's success is its attempt's)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(state, state) for state in sorted(states.ALL_STATES)]

    def queryset(self, request, queryset):
        value = self.value()
        return with_state(queryset, value) if value else queryset


@admin.register(TaskResult)
class TaskHistoryAdmin(LargeTableAdmin, ReadOnlyAdmin):
    """Every task from the moment it was sent: readable arguments, attempts, links to the scan,
    and the controls Flower and django-celery-results lack (re-run, revoke).

    The list costs the same queries whatever its length: each row's queue and retries come
    with the rows (a subquery on the latest attempt), not from a query per row."""

    list_display = (
        "task_id",
        "task_name",
        "state",
        "worker_name",
        "queue",
        "retries",
        "date_created",
        "done_at",
        "scan_link",
    )
    list_filter = (
        StateFilter,
        recent_values_filter("task_name"),
        recent_values_filter("worker"),
        recent_values_filter("periodic_task_name"),
        ("date_created", admin.DateFieldListFilter),
    )
    search_fields = ("task_id", "task_name", "task_args", "task_kwargs", "periodic_task_name")
    actions = ["rerun_selected", "revoke_selected", "terminate_selected"]
    fields = (
        "task_id", "task_name", "state", "scan_link", "periodic_task_name", "worker_name",
        "date_created", "date_started", "done_at", "args_pretty", "kwargs_pretty",
        "result_pretty", "traceback", "attempts_table", "reruns",
    )  # fmt: skip
    readonly_fields = fields  # read-only (ReadOnlyAdmin); the actions below are the controls

    def has_retry_permission(self, request):
        return request.user.has_perm("scans.retry_scan")

    def get_queryset(self, request):
        return with_last_attempt(super().get_queryset(request))

    # A pipeline step that succeeded keeps its queued row (scans.result_backend): its state,
    # worker and end come from its latest attempt.
    @admin.display(description="status", ordering="status")
    def state(self, result):
        return shown_state(result)

    @admin.display(description="worker", ordering="worker")
    def worker_name(self, result):
        return result.worker or result.last_worker or "-"

    @admin.display(description="date done", ordering="date_done")
    def done_at(self, result):
        if shown_state(result) != result.status:
            return result.last_finished_at
        return result.date_done

    def _attempts(self, result):
        return TaskAttempt.objects.filter(task_id=result.task_id).order_by("started_at")

    @admin.display(description="queue")
    def queue(self, result):
        return result.last_queue or "-"

    @admin.display(description="retries")
    def retries(self, result):
        return result.last_attempt - 1 if result.last_attempt else 0

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
