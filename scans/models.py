"""Scans and the rule base they are matched against."""

from __future__ import annotations

import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


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


class CategoryKind(models.TextChoices):
    RECYCLABLE = "recyclable", _("Recyclable")
    GENERAL = "general", _("General waste")
    NONCOMBUSTIBLE = "noncombustible", _("Non-combustible waste")
    FOOD = "food", _("Food waste")
    CONSTRUCTION = "construction", _("Household construction waste")
    BULKY = "bulky", _("Bulky waste")
    HAZARDOUS = "hazardous", _("Household hazardous waste")


class Category(models.Model):
    """One of the 18 rule-addressable categories (12 recyclable middles + 6 other majors)."""

    code = models.SlugField(max_length=40, unique=True)
    kind = models.CharField(max_length=20, choices=CategoryKind.choices)
    major_ko = models.CharField(max_length=50)
    major_en = models.CharField(max_length=80)
    middle_ko = models.CharField(
        max_length=50, help_text=_("Same as the major for non-recyclables.")
    )
    middle_en = models.CharField(max_length=80)
    summary_ko = models.TextField(blank=True)
    summary_en = models.TextField(blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'States that send an item of this category to another bin: [{"tag": "broken", '
            '"goes_to": "noncombustible", "note_ko": "…", "note_en": "…"}].'
        ),
    )

    class Meta:
        ordering = ["position", "code"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return f"{self.middle_ko} ({self.middle_en})"


class SituationTag(models.Model):
    """A visually or verbally verifiable situation, e.g. "label attached"."""

    code = models.SlugField(max_length=50, unique=True)
    group = models.CharField(max_length=30)
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    fix_ko = models.CharField(
        max_length=200, blank=True, help_text=_("What the user still has to do.")
    )
    fix_en = models.CharField(max_length=200, blank=True)
    triggers = models.JSONField(
        default=list, blank=True, help_text=_("Hint phrases that mean the tag applies.")
    )
    negations = models.JSONField(
        default=list, blank=True, help_text=_("Hint phrases that mean it does not.")
    )

    class Meta:
        ordering = ["group", "code"]

    def __str__(self) -> str:
        return f"{self.code} ({self.name_ko})"


class DisposalStep(models.Model):
    """A disposal step of a category; with a tag, it applies only when that tag is present.

    A step with ``unless_tag`` is left out when that tag is present: a tagged step that says
    the same thing for that situation stands in its place ("peel off the label" gives way to
    "tear the label off along the perforation"), so the guidance does not say it twice.
    """

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=0)
    tag = models.ForeignKey(
        SituationTag, null=True, blank=True, on_delete=models.CASCADE, related_name="steps"
    )
    unless_tag = models.ForeignKey(
        SituationTag,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_steps",
        help_text=_("Left out when this tag is present (a step of that tag replaces it)."),
    )
    text_ko = models.TextField()
    text_en = models.TextField()
    # A step about some items of its category only (the butane step is not an aluminium
    # can's): ``items`` lists the items it is for, ``except_items`` those it is not for (the
    # rule base's Korean item or exclusion names); both empty: every item.
    items = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Only for these items (Korean names); empty: every item of the category."),
    )
    except_items = models.JSONField(
        default=list, blank=True, help_text=_("Not for these items (Korean names).")
    )

    class Meta:
        ordering = ["category", "position"]

    def __str__(self) -> str:
        return self.text_ko


class Item(models.Model):
    """A target item of a category, with the names people actually type."""

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="items")
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    aliases = models.JSONField(default=list, blank=True)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Like the category's reroutes, for this item only (checked first)."),
    )
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'Where the bin depends on a condition: [{"when_ko": "…", "when_en": "…", '
            '"goes_to": "metal", "tag" or "absent": "contents_left"}], one per bin.'
        ),
    )

    class Meta:
        ordering = ["category", "name_ko"]

    def __str__(self) -> str:
        return f"{self.name_ko} ({self.name_en})"


class Exclusion(models.Model):
    """ "Not this bin": an item people put in ``category`` that belongs in ``goes_to``."""

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="exclusions")
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    aliases = models.JSONField(default=list, blank=True)
    goes_to = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="redirected_from")
    note_ko = models.TextField(blank=True)
    note_en = models.TextField(blank=True)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Like the category's reroutes, for this item only (checked first)."),
    )
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'Where the bin depends on a condition: [{"when_ko": "…", "when_en": "…", '
            '"goes_to": "metal", "tag" or "absent": "contents_left"}], one per bin.'
        ),
    )

    class Meta:
        ordering = ["category", "name_ko"]

    def __str__(self) -> str:
        return f"{self.name_ko} → {self.goes_to.code}"


class RuleBaseRevision(models.Model):
    """One row whose token changes with every change to the rule base.

    Processes keep the rule base in memory (scans.rulebase_cache) and compare this token,
    one indexed read, instead of reading five tables per scan.
    """

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"rule base revision {self.token} ({self.changed_at:%Y-%m-%d %H:%M:%S})"


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
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scans"
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
    image_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    image_prepared_at = models.DateTimeField(null=True, blank=True)
    hint = models.CharField(max_length=200, blank=True)
    language = models.CharField(
        max_length=10,
        default=default_scan_language,
        help_text=_("The language the guidance is written in: the uploader's, at upload."),
    )
    batch = models.ForeignKey(
        ScanBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="scans"
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
        max_length=255, blank=True, db_index=True, help_text=_("Root task id of the current chain.")
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
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="scan_owner_recent"),
            models.Index(fields=["status", "updated_at"], name="scan_status_updated"),
            models.Index(fields=["status", "dispatched_at"], name="scan_status_dispatched"),
        ]
        permissions = [
            ("retry_scan", "Can retry failed scans, redrive dead letters, re-run and revoke tasks")
        ]

    def __str__(self) -> str:
        return f"Scan {self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


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
            models.Index(fields=["scan", "step", "outcome"], name="attempt_scan_step_outcome")
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
        indexes = [models.Index(fields=["published_at", "occurred_at"], name="event_unpublished")]

    def __str__(self) -> str:
        return f"{self.type} {self.scan_id}"

    @property
    def routing_key(self) -> str:
        return EVENT_ROUTING_KEYS[ScanEventType(self.type)]


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
