"""The admin of beat's periodic jobs: django-celery-beat's page, with how long ago each job was
last sent and whether it is late (eco2/beat_watch.py)."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from eco2.beat_watch import JobAge, job_ages

admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class WatchedPeriodicTaskAdmin(PeriodicTaskAdmin):
    list_display = (
        "name",
        "enabled",
        "scheduler",
        "interval",
        "last_run_at",
        "last_sent",
        "one_off",
    )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        # one read of every job's age for the page, not one per row
        self._ages = {age.name: age for age in job_ages()}
        return super().changelist_view(request, extra_context)

    @admin.display(description=gettext_lazy("Last sent"))
    def last_sent(self, job: PeriodicTask) -> str:
        age: JobAge | None = getattr(self, "_ages", {}).get(job.name)
        if age is None or age.seconds is None:
            return gettext("never")
        text = _ago(age.seconds)
        if age.late:
            return format_html('<strong style="color:#ba2121">{} ({})</strong>', text, "late")
        return text


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
