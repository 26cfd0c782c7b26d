"""What runs the pipeline keeps: the caches of paid calls and their leases, the task ledger,
dead letters, task re-runs and idempotency keys."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .scans import Scan, ScanStep


class VisionCacheEntry(models.Model):
    """A paid classification, reused for the same prepared photo, hint, model and prompt.

    The key hashes all four, so a changed prompt version or model never serves a stale answer.
    """

    key = models.CharField(max_length=64, unique=True)
    provider = models.CharField(max_length=255)  # the cache namespace: server, model, prompt …
    image_sha256 = models.CharField(max_length=64, db_index=True)
    classification = models.JSONField()
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "vision cache entries"

    def __str__(self) -> str:
        return f"{self.provider} {self.image_sha256[:12]} ({self.hits} hits)"


class AnswerCacheEntry(models.Model):
    """Paid guidance, reused for every scan with the same rules, situation tags and language.

    The key hashes all that the answer depends on (services.compose_answer): the server, model
    and prompt, the language, the category and its rules as matched, the sorted tags. The
    other fields say what it is, for the admin.
    """

    key = models.CharField(max_length=64, unique=True)
    provider = models.CharField(max_length=255)  # the cache namespace: server, model, prompt …
    category_code = models.CharField(max_length=40, db_index=True)
    situation_tags = models.JSONField(default=list, blank=True)
    language = models.CharField(max_length=10)
    answer = models.JSONField()
    hits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "answer cache entries"

    def __str__(self) -> str:
        tags = ",".join(self.situation_tags or []) or "-"
        return f"{self.category_code} [{tags}] {self.language} ({self.hits} hits)"


class VisionCallLease(models.Model):
    """ "This is being paid for": held while one scan makes the paid call of a cache key (a
    photo's classification, or guidance for an answer cache key).

    A second scan with the same key waits for the first one's cache entry instead of paying
    for the same call (services._await_or_claim). A lease outlives a crashed holder only until
    ``expires_at``.
    """

    key = models.CharField(max_length=64, unique=True)
    scan_id = models.UUIDField()
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key[:12]} by {self.scan_id} until {self.expires_at:%H:%M:%S}"


class AttemptOutcome(models.TextChoices):
    STARTED = "started", _("Started")  # still running, or the worker died before it finished
    SUCCEEDED = "succeeded", _("Succeeded")  # the step did its work and stored its result
    SKIPPED = "skipped", _("Skipped")  # a redelivery that found the result already stored
    RETRY = "retry", _("Retry scheduled")
    FAILED = "failed", _("Failed")
    WORKER_LOST = "worker_lost", _("Worker lost")


class TaskAttempt(models.Model):
    """One delivery of a pipeline task to a worker: the ledger django-celery-results lacks.

    django-celery-results keeps one row per task id, overwritten by each retry; this keeps
    every attempt, with its exception, duration, worker and queue.
    """

    scan = models.ForeignKey(
        Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="attempts"
    )
    task_id = models.CharField(max_length=255, db_index=True)
    task_name = models.CharField(max_length=255)
    step = models.CharField(max_length=20, choices=ScanStep.choices, blank=True)
    attempt = models.PositiveSmallIntegerField(
        help_text=_("1 for the first run, 2 after one retry …")
    )
    redelivered = models.BooleanField(default=False, help_text=_("The broker delivered it before."))
    worker = models.CharField(max_length=255, blank=True)
    queue = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(
        max_length=20, choices=AttemptOutcome.choices, default=AttemptOutcome.STARTED
    )
    exception_class = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["scan", "step", "outcome"], name="attempt_scan_step_outcome"),
            # the retention job selects old attempts by start, a batch at a time
            models.Index(fields=["started_at"], name="attempt_started"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.attempt} {self.outcome}"


class DeadLetterQuerySet(models.QuerySet):
    def pending(self) -> DeadLetterQuerySet:
        """Waiting for someone: neither redriven (its scan re-enqueued) nor resolved."""
        return self.filter(redriven_at=None, resolved_at=None)


class DeadLetter(models.Model):
    """A pipeline message that will not run again on its own; kept in the DB as well as on
    the broker's dead-letter queue (scan.ai.dlq), so the path also works without a DLX.

    Pending until its scan is re-enqueued (``redriven_*``: a redrive or a retry) or it is
    resolved (``resolved_*``: its scan completed, or staff dismissed it)."""

    scan = models.ForeignKey(
        Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="dead_letters"
    )
    task_id = models.CharField(max_length=255, db_index=True)
    task_name = models.CharField(max_length=255)
    step = models.CharField(max_length=20, choices=ScanStep.choices, blank=True)
    reason_code = models.CharField(max_length=50)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    redriven_at = models.DateTimeField(null=True, blank=True)
    redriven_by = models.CharField(max_length=150, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["task_id"], name="one_dead_letter_per_task"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id} ({self.reason_code})"


class TaskRerun(models.Model):
    """A task run again from the admin: same name and arguments, a new id, and this link."""

    original_task_id = models.CharField(max_length=255, db_index=True)
    new_task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255)
    requested_by = models.CharField(max_length=150, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.task_name}: {self.original_task_id} → {self.new_task_id}"


class IdempotencyKey(models.Model):
    """The first response to ``POST /api/v1/scans`` with an ``Idempotency-Key`` header.

    Claimed by a single INSERT in the same transaction as the scan; the unique (owner, key)
    constraint is the arbiter, so concurrent replays create one scan (scans.idempotency).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(
        max_length=64, help_text=_("SHA-256 of the request (photo bytes or URL, and hint).")
    )
    scan = models.ForeignKey(
        Scan, null=True, blank=True, on_delete=models.CASCADE, related_name="idempotency_keys"
    )
    response_status = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(default=dict, blank=True)
    response_location = models.CharField(max_length=2048, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "key"], name="one_idempotency_key_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.owner_id}:{self.key} → {self.response_status}"
