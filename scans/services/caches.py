"""The vision and answer caches: a result per key, a lease so concurrent misses pay once."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from eco2.db import insert_unless_exists, release_db_connection

from ..models import AnswerCacheEntry, Scan, ScanOutcome, VisionCacheEntry, VisionCallLease
from ..providers import get_answer_provider, get_vision_provider
from ..providers.base import AnswerRequest, VisionRequest

logger = logging.getLogger(__name__)


def vision_cache_key(namespace: str, image_sha256: str, hint: str) -> str:
    """Same prepared photo + same hint + same provider, model and prompt version → same key."""
    parts = "\x1f".join([namespace, image_sha256, " ".join(hint.split())])
    return hashlib.sha256(parts.encode()).hexdigest()


# Concurrent misses of one cache key: the first scan pays, the others wait for its entry.
# Twice OPENAI_TIMEOUT's default: a call that outlasts it (a server trickling its answer; the
# threads pool enforces no time limit) lets a waiter pay for its own call instead.
VISION_LEASE = timedelta(seconds=60)
VISION_WAIT_MAX = 20.0  # then a waiter pays itself: better a second call than a failed scan
VISION_WAIT_POLL = 0.25
CACHE_LABEL_CHARS = 255  # a cache entry's provider label (the key holds the whole namespace)


def _cache_hit(
    model: type[VisionCacheEntry | AnswerCacheEntry], key: str, field: str
) -> dict | None:
    """The ``field`` of the entry under ``key`` (None on a miss), its hit counted."""
    entry = model.objects.filter(key=key).first()
    if entry is None:
        return None
    model.objects.filter(pk=entry.pk).update(hits=F("hits") + 1, last_hit_at=timezone.now())
    return getattr(entry, field)


def _cached_classification(key: str) -> dict | None:
    return _cache_hit(VisionCacheEntry, key, "classification")


def _claim_vision_call(key: str, scan_id) -> bool:
    """Take the lease on ``key`` (or a lapsed one); False while another scan holds it."""
    now = timezone.now()
    if insert_unless_exists(
        VisionCallLease(key=key, scan_id=scan_id, expires_at=now + VISION_LEASE)
    ):
        return True
    # the holder's lease lapsed (it crashed), or the holder is this scan (a redelivery after
    # its worker died mid-call): the conditional UPDATE lets exactly one waiter in
    return bool(
        VisionCallLease.objects.filter(key=key)
        .filter(Q(expires_at__lt=now) | Q(scan_id=scan_id))
        .update(scan_id=scan_id, expires_at=now + VISION_LEASE)
    )


def _await_or_claim(
    key: str, scan_id, lookup: Callable[[str], dict | None] = _cached_classification
) -> tuple[dict | None, bool]:
    """The cached result (``lookup``: a classification, or an answer) once another scan stored
    it, or the lease to pay for it.

    Returns (result, False) on a hit, (None, True) with the lease, (None, False) when the wait
    ran out (the caller pays without a lease).
    """
    deadline = time.monotonic() + VISION_WAIT_MAX
    while True:
        if _claim_vision_call(key, scan_id):
            # an entry stored between our lookup and the claim: no call needed
            cached = lookup(key)
            if cached is not None:
                VisionCallLease.objects.filter(key=key, scan_id=scan_id).delete()
            return cached, cached is None
        if time.monotonic() >= deadline:
            logger.warning("vision cache key %s: waited %ss for another scan", key, VISION_WAIT_MAX)
            return None, False
        release_db_connection()  # a pool connection is not held through the wait
        time.sleep(VISION_WAIT_POLL)
        cached = lookup(key)
        if cached is not None:
            return cached, False


def _classify(scan: Scan, image: bytes) -> tuple[dict, str, dict | None, bool]:
    """Classification, provider name, usage of a paid call (None if free or cached), cache hit.

    With a cache (providers that have a ``cache_namespace``), one call per key: concurrent
    scans of the same photo wait for the first one's entry instead of paying again.
    """
    provider = get_vision_provider()
    namespace = getattr(provider, "cache_namespace", None)
    key = vision_cache_key(namespace, scan.image_sha256, scan.hint) if namespace else None
    leased = False
    if key:
        cached = _cached_classification(key)
        if cached is None:
            cached, leased = _await_or_claim(key, scan.pk)
        if cached is not None:
            return cached, provider.name, None, True
    try:
        release_db_connection()  # the call may take seconds; reconnect for the writes after it
        result = provider.classify(
            VisionRequest(image=image, hint=scan.hint, language=scan.language)
        )
        classification = result.to_dict()
        usage = classification.pop("usage", None)
        # Only a classification is cached: an unclassified result (the model not sure, below
        # OPENAI_MIN_CONFIDENCE, or unable to tell) asks the user, and asks again next time
        # rather than freezing one unsure draw for every scan of this photo.
        if key and result.outcome == ScanOutcome.CLASSIFIED:
            # two scans of the same photo racing: the first entry wins, the second is no error
            VisionCacheEntry.objects.get_or_create(
                key=key,
                defaults={
                    "provider": namespace[:CACHE_LABEL_CHARS],
                    "image_sha256": scan.image_sha256,
                    "classification": classification,
                },
            )
    finally:
        if leased:  # also when the call failed: a waiter takes over at once, not at expiry
            VisionCallLease.objects.filter(key=key, scan_id=scan.pk).delete()
    return classification, provider.name, usage, False


def _cached_answer(key: str) -> dict | None:
    return _cache_hit(AnswerCacheEntry, key, "answer")


def compose_answer(request: AnswerRequest, *, scan_id=None) -> tuple[dict, dict | None, bool]:
    """The answer (its stored form), the usage of a paid call (None if free or cached), and
    whether it came from the answer cache.

    Providers that pay for an answer give it a cache key (``answer_cache_key``: the rules as
    matched, the sorted tags, the language, the model and prompt): a repeated classification
    costs nothing. Within a scan's step (``scan_id``) concurrent misses of one key take the
    vision cache's lease, so one scan pays and the others wait for its entry; without it (the
    benchmark) they may both pay.
    """
    provider = get_answer_provider()
    cache_key_of = getattr(provider, "answer_cache_key", None)
    # SCAN_ANSWER_CACHE off: every scan pays its answer (a prompt being tuned; the slow-provider
    # benchmark, whose scans must make both calls)
    key = cache_key_of(request) if cache_key_of and settings.SCAN_ANSWER_CACHE else None
    leased = False
    if key:
        cached = _cached_answer(key)
        if cached is None and scan_id is not None:
            cached, leased = _await_or_claim(key, scan_id, _cached_answer)
        if cached is not None:
            return cached, None, True
    try:
        release_db_connection()  # the call may take seconds; reconnect for the writes after it
        answer = provider.compose(request).to_dict()
        usage = answer.pop("usage", None)
        if key:
            # two scans racing (the lease ran out): the first entry wins, the second is no error
            AnswerCacheEntry.objects.get_or_create(
                key=key,
                defaults={
                    "provider": getattr(provider, "cache_namespace", provider.name)[
                        :CACHE_LABEL_CHARS
                    ],
                    "category_code": (request.rules or {}).get("category_code") or "",
                    "situation_tags": sorted(
                        set(request.classification.get("situation_tags") or [])
                    ),
                    "language": request.language,
                    "answer": answer,
                },
            )
    finally:
        if leased:  # also when the call failed: a waiter takes over at once, not at expiry
            VisionCallLease.objects.filter(key=key, scan_id=scan_id).delete()
    return answer, usage, False
