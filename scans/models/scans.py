"""Scans and what they belong to or leave behind: the scan, its batch and its events."""

from __future__ import annotations

import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .rulebase import Category


class ScanStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    PROCESSING = "processing", _("Processing")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    # the classification was not sure: the run ended with a question (Scan.choices); the
    # owner's choice, or a hint, resumes it (services.choose_category, rerun_with_hint)
    NEEDS_INPUT = "needs_input", _("Needs your choice")


# The end of a pipeline run. needs_input is one too (nothing runs until the owner answers:
# the sweeper leaves it alone, a batch counts it as ended), but it is the only one that can
# go on, to completed or failed.
TERMINAL_STATUSES = frozenset({ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.NEEDS_INPUT})


class ScanStep(models.TextChoices):
    QUEUED = "queued", _("Waiting for a worker")
    PREPARE = "prepare", _("Preparing the photo")  # a task of its own; scans show it as vision
    VISION = "vision", _("Recognising the item")
    RULE = "rule", _("Finding disposal rules")
    ANSWER = "answer", _("Writing the guidance")
    INPUT = "input", _("Waiting for your choice")  # status needs_input
    DONE = "done", _("Done")


class ScanOutcome(models.TextChoices):
    CLASSIFIED = "classified", _("Classified")
    UNCLASSIFIED = "unclassified", _("Needs a description")  # scans completed before needs_input
    AMBIGUOUS = "ambiguous", _("Asked which one it is")  # status needs_input


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})


def scan_image_path(scan: Scan, filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    # the client's file name lends at most an image suffix: the stored name always fits the
    # column, and the owner-checked photo view never serves it as .html or .svg
    if suffix not in IMAGE_SUFFIXES:
        suffix = ".img"
    return f"scans/{timezone.now():%Y/%m/%d}/{scan.id}{suffix}"


class BatchStatus(models.TextChoices):
    PROCESSING = "processing", _("Processing")
    COMPLETED = "completed", _("Completed")


class ScanBatch(models.Model):
    """Several photos scanned together: a Celery chord of per-photo pipelines whose callback
    (aggregate_results) writes the summary once every member has ended, failed ones included."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scan_batches"
    )
    status = models.CharField(
        max_length=20, choices=BatchStatus.choices, default=BatchStatus.PROCESSING
    )
    summary = models.JSONField(null=True, blank=True)
    chord_id = models.CharField(max_length=255, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "scan batches"

    def __str__(self) -> str:
        return f"Batch {self.id} ({self.status})"


def default_scan_language() -> str:
    """A scan made outside a request (a script) is in the site's language."""
    return settings.LANGUAGE_CODE


class Scan(models.Model):
    """One photo going through vision → rule → answer. The row is the source of truth."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # no index of its own: scan_owner_recent starts with it (see Meta)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scans", db_index=False
    )
    image = models.ImageField(
        upload_to=scan_image_path,
        help_text=_(
            "The upload; replaced by the prepared JPEG (upright, no metadata) on a worker."
        ),
    )
    image_url = models.URLField(
        max_length=2048,
        blank=True,
        help_text=_(
            "Where the photo was given by address: fetched by the worker (SSRF-checked) "
            "instead of an upload."
        ),
    )
    thumbnail = models.ImageField(upload_to=scan_image_path, blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True)  # read with its row, never searched
    image_prepared_at = models.DateTimeField(null=True, blank=True)
    hint = models.CharField(max_length=200, blank=True)
    language = models.CharField(
        max_length=10,
        default=default_scan_language,
        help_text=_("The language the guidance is written in: the uploader's, at upload."),
    )
    batch = models.ForeignKey(
        ScanBatch,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="scans",
        db_index=False,  # scan_batch_member (Meta): the few scans of a batch, not every NULL
    )

    status = models.CharField(max_length=20, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    step = models.CharField(max_length=20, choices=ScanStep.choices, default=ScanStep.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)

    classification = models.JSONField(null=True, blank=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="scans"
    )
    matched_rules = models.JSONField(null=True, blank=True)
    answer = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=ScanOutcome.choices, blank=True)
    provider = models.CharField(max_length=40, blank=True)
    choices = models.JSONField(
        null=True,
        blank=True,
        help_text=_(
            "What a scan that was not sure offered (status needs_input): up to 4 items with "
            "their bins, best first."
        ),
    )

    # What the scan cost: per step in ``usage`` ({"vision": {...}, "answer": {...}}), summed here.
    usage = models.JSONField(default=dict, blank=True)
    vision_model = models.CharField(max_length=80, blank=True)
    answer_model = models.CharField(max_length=80, blank=True)
    prompt_version = models.CharField(max_length=80, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    # the exact sum of the steps' costs (each priced to 10 decimals, scans.providers.openai.cost_usd)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    vision_cache_hit = models.BooleanField(
        default=False, help_text=_("The classification came from the cache: no provider call.")
    )
    answer_cache_hit = models.BooleanField(
        default=False, help_text=_("The guidance came from the cache: no provider call.")
    )

    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)

    celery_root_id = models.CharField(
        max_length=255, blank=True, help_text=_("Root task id of the current chain.")
    )
    # The scan row is its own outbox: a chain is owed until dispatched_at is set, and the relay
    # (beat) publishes what the request could not, e.g. while the broker was down.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_attempts = models.PositiveSmallIntegerField(default=0)
    requeue_count = models.PositiveSmallIntegerField(
        default=0, help_text=_("Times the stalled-scan sweeper re-enqueued it.")
    )
    retry_count = models.PositiveSmallIntegerField(
        default=0, help_text=_("Times it was retried by hand (admin, redrive).")
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Every index is written on each INSERT and on each UPDATE that is not HOT (PostgreSQL
        # updates a row in place, indexes untouched, only when no indexed column changes), and
        # a scan is updated once a step. So no index holds updated_at (every write changes
        # it: no step's write could be HOT) and the state indexes hold only the scans they
        # find: the sweeper, the relay and the backlog read the few active scans (then filter
        # on updated_at / dispatched_at); staff list failed ones, newest first.
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="scan_owner_recent"),
            models.Index(
                fields=["status"],
                condition=models.Q(status__in=[ScanStatus.QUEUED, ScanStatus.PROCESSING]),
                name="scan_active",
            ),
            models.Index(
                fields=["-created_at"],
                condition=models.Q(status=ScanStatus.FAILED),
                name="scan_failed_recent",
            ),
            models.Index(
                fields=["batch"], condition=models.Q(batch__isnull=False), name="scan_batch_member"
            ),
        ]
        permissions = [
            ("retry_scan", "Can retry failed scans, redrive dead letters, re-run and revoke tasks")
        ]

    def __str__(self) -> str:
        return f"Scan {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class ScanTotals(models.Model):
    """What all scans have added up to since the first one: counters, in ``SHARDS`` rows that
    add up to the totals (selectors.running_totals).

    Incremented in the transaction of the write it counts (a step storing its provider usage,
    a run ending), so ``/metrics`` reads a few rows instead of summing the scans table at every
    scrape, and deleting scans never lowers it. Migration 0022 started it from the scans then
    stored (row 1).

    Why rows, not one: a write holds the row it increments until its transaction commits, and
    with one row every step's final write on every worker waited for the one before it (with
    128 threads, 3.8 of the database's 5 busy sessions were waiting on that row at any time).
    A write adds to one row picked at random (services.state.add_to_totals).
    """

    SHARDS = 16

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    # runs that ended so: a scan asked, then answered, then completed counts once in each
    ended_completed = models.BigIntegerField(default=0)
    ended_failed = models.BigIntegerField(default=0)
    ended_needs_input = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "scan totals"

    def __str__(self) -> str:
        return "Scan totals"


class ScanEventType(models.TextChoices):
    COMPLETED = "ScanCompleted", "ScanCompleted"
    FAILED = "ScanFailed", "ScanFailed"
    NEEDS_INPUT = "ScanNeedsInput", "ScanNeedsInput"  # the run ended with a question
    RESUMED = "ScanResumed", "ScanResumed"  # the owner answered it: a choice or a hint


EVENT_ROUTING_KEYS = {
    ScanEventType.COMPLETED: "scan.completed",
    ScanEventType.FAILED: "scan.failed",
    ScanEventType.NEEDS_INPUT: "scan.needs_input",
    ScanEventType.RESUMED: "scan.resumed",
}


class ScanEvent(models.Model):
    """An event in the event store, appended in the same transaction as the scan's final
    status (or its resumption after a question); the relay publishes it to the topic exchange ``eco2.events`` (at least once).

    The id is the message id on the broker: consumers deduplicate by it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=40, choices=ScanEventType.choices)
    scan = models.ForeignKey(Scan, on_delete=models.CASCADE, related_name="events")
    payload = models.JSONField()
    occurred_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["occurred_at"]
        indexes = [
            models.Index(fields=["published_at", "occurred_at"], name="event_unpublished"),
            # the admin's list, newest first, a page at a time whatever the table's size
            models.Index(fields=["occurred_at"], name="event_occurred"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.scan_id}"

    @property
    def routing_key(self) -> str:
        return EVENT_ROUTING_KEYS[ScanEventType(self.type)]
