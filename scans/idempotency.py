"""``Idempotency-Key`` on ``POST /api/v1/scans``: a replay gets the first response, never a
second scan, also when the replays arrive at the same moment.

The original system checked a cache and set it afterwards (check-then-set, not per user), so
two concurrent duplicates both started jobs. Here the key is claimed by **one INSERT** into
``IdempotencyKey`` (unique per owner and key) **in the same transaction** as the scan:

* the first request inserts the claim, creates the scan and stores its response, then commits;
* a concurrent duplicate's INSERT waits on the unique index until the first commits
  (PostgreSQL; SQLite serialises the whole write transaction) and then fails: it reads the
  committed row and answers with the stored response, or 422 if its body differs;
* if the first request fails and rolls back, its claim goes with it and the key is free again.

Keys are scoped per user and expire after ``SCAN_IDEMPOTENCY_TTL_HOURS`` (24 h); an expired
key is replaced on reuse, and the table's retention job deletes old rows (scans/services/retention.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import IdempotencyKey, Scan

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class InvalidKey(ValueError):
    """The header is present but not a usable key (message for the client)."""


class KeyReused(Exception):
    """The key was used before with a different request body."""


class KeyInFlight(Exception):
    """Another request with the key has not finished (only if it could not be waited for)."""


@dataclass
class StoredResponse:
    status: int
    body: dict
    location: str = ""
    scan: Scan | None = field(default=None, repr=False)
    replayed: bool = False

    def headers(self) -> dict[str, str]:
        headers = {"Location": self.location} if self.location else {}
        if self.replayed:
            headers["Idempotent-Replayed"] = "true"
        return headers


def ttl() -> timedelta:
    return timedelta(hours=settings.SCAN_IDEMPOTENCY_TTL_HOURS)


def read_key(headers) -> str | None:
    """The request's Idempotency-Key, or None without one. Raises InvalidKey.

    The IETF draft sends the key as a structured-field string ("…"); a bare token is accepted
    too. Visible ASCII only, at most 255 characters.
    """
    raw = headers.get(HEADER)
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise InvalidKey(_("The Idempotency-Key header is empty."))
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(
            _("The Idempotency-Key is longer than %(max)d characters.") % {"max": MAX_KEY_LENGTH}
        )
    if not all(33 <= ord(ch) <= 126 for ch in key):
        raise InvalidKey(_("The Idempotency-Key may contain visible ASCII characters only."))
    return key


def fingerprint(*, image=None, image_url: str = "", hint: str = "") -> str:
    """What makes two requests "the same": the photo's bytes (or its URL) and the hint."""
    digest = hashlib.sha256()
    if image is not None:
        image.seek(0)
        for chunk in image.chunks():
            digest.update(chunk)
        image.seek(0)
    parts = {"image_sha256": digest.hexdigest() if image is not None else "", "url": image_url}
    parts["hint"] = " ".join((hint or "").split())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _stored(owner, key: str) -> IdempotencyKey | None:
    return IdempotencyKey.objects.filter(
        owner=owner, key=key, created_at__gte=timezone.now() - ttl()
    ).first()


def _replay(record: IdempotencyKey, request_fingerprint: str) -> StoredResponse:
    if record.fingerprint != request_fingerprint:
        raise KeyReused(
            _(
                "This Idempotency-Key was already used with a different request (another "
                "photo, URL or hint). Use a new key for a new scan."
            )
        )
    if not record.response_status:
        raise KeyInFlight(_("A request with this Idempotency-Key is still being processed."))
    return StoredResponse(
        status=record.response_status,
        body=record.response_body,
        location=record.response_location,
        scan=record.scan,
        replayed=True,
    )


def run_once(
    *, owner, key: str, request_fingerprint: str, create: Callable[[], StoredResponse]
) -> StoredResponse:
    """``create()`` at most once per (owner, key); replays get its stored response.

    Raises KeyReused (→ 422) for the same key with another body, KeyInFlight (→ 409) in the
    unlikely case the first request's claim is visible but not finished.
    """
    existing = _stored(owner, key)
    if existing is not None:  # the common replay: no write at all
        return _replay(existing, request_fingerprint)
    with transaction.atomic():
        # an expired claim gives its key back; the DELETE and the INSERT are one transaction
        IdempotencyKey.objects.filter(
            owner=owner, key=key, created_at__lt=timezone.now() - ttl()
        ).delete()
        try:
            with transaction.atomic():  # a savepoint: a lost claim leaves the outer one usable
                claim = IdempotencyKey.objects.create(
                    owner=owner, key=key, fingerprint=request_fingerprint
                )
        except IntegrityError:
            claim = None  # a concurrent request holds the key and has committed it
        if claim is not None:
            response = create()
            claim.scan = response.scan
            claim.response_status = response.status
            claim.response_body = response.body
            claim.response_location = response.location
            claim.save(
                update_fields=["scan", "response_status", "response_body", "response_location"]
            )
            return response
    existing = IdempotencyKey.objects.filter(owner=owner, key=key).first()
    if existing is None:  # the holder rolled back after our INSERT failed: rare, retryable
        raise KeyInFlight(_("A request with this Idempotency-Key did not finish; try again."))
    return _replay(existing, request_fingerprint)
