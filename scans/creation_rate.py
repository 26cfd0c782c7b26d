"""The per-user rate of scan creation (``SCAN_CREATE_RATE``): a cost guard on every way in.

Enforced by the services that create scans (``create_scan``, ``create_batch``), so the API,
the upload page, batches (each photo counts) and ``manage.py scan`` share one budget.

With Redis (``REDIS_URL``) the count is one round trip (MULTI … EXEC): a sorted set per user of
the creation times of the last ``period`` (a sliding log, at most the limit's few entries),
shared by every web process. Without Redis, or while it does not answer, the user's scans of
the last ``period`` are counted in the database (the ``scan_owner_recent`` index: one query,
stopped at the limit): the guard never fails open.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from datetime import timedelta

import redis
from django.conf import settings
from django.utils import timezone

from .errors import CodedError, error_message
from .metrics import count_refused_scans
from .models import Scan
from .progress import redis_client

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KEY_PREFIX = "eco2:scan-rate"
# After Redis failed to answer, the database counts for this long before Redis is asked again:
# a Redis that is down or partitioned costs the uploads of a process one timeout, not one each.
REDIS_RETRY_AFTER = 5.0
_redis_down_until = 0.0
_redis_state = threading.Lock()


class ScanRateLimited(CodedError):
    """The user created more scans than SCAN_CREATE_RATE allows; nothing was stored."""

    code = "scan_rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


def parse_rate(rate: str) -> tuple[int, int] | None:
    """``"30/min"`` → (30, 60): scans and seconds; None when the guard is off (empty)."""
    if not rate:
        return None
    count, _, unit = rate.partition("/")
    return int(count), PERIODS[unit.strip()[0]]


def ensure_within_rate(owner, new_scans: int = 1) -> None:
    """Raise ScanRateLimited (with the seconds to wait) unless ``owner`` may create
    ``new_scans`` more scans now. The scans allowed are counted as created."""
    rate = parse_rate(settings.SCAN_CREATE_RATE)
    if rate is None:
        return
    limit, period = rate
    wait = _redis_wait(owner.pk, new_scans, limit, period)
    if wait is None:
        wait = _database_wait(owner, new_scans, limit, period)
    if wait:
        count_refused_scans("rate", new_scans)
        raise ScanRateLimited(
            error_message(ScanRateLimited.code, rate=settings.SCAN_CREATE_RATE),
            retry_after=wait,
        )


def _key(owner_id) -> str:
    return f"{KEY_PREFIX}:{owner_id}"


def _redis_wait(owner_id, new_scans: int, limit: int, period: int) -> int | None:
    """Seconds to wait (0: allowed, and counted) by the owner's log of creation times in Redis;
    None when Redis is not configured or does not answer (the caller counts in the database)."""
    global _redis_down_until
    client = redis_client()
    if client is None or time.monotonic() < _redis_down_until:
        return None
    key, now = _key(owner_id), time.time()
    token = uuid.uuid4().hex
    ours = {f"{now:.6f}:{token}:{index}": now for index in range(new_scans)}
    try:
        pipe = client.pipeline(transaction=True)  # MULTI … EXEC: one round trip
        pipe.zremrangebyscore(key, "-inf", now - period)
        pipe.zadd(key, ours)
        pipe.zcard(key)
        pipe.expire(key, period + 1)
        counted = pipe.execute()[2]
        if counted <= limit:
            return 0
        # refused: a refused request uses none of the budget; when is there room again?
        pipe = client.pipeline(transaction=True)
        pipe.zrem(key, *ours)
        pipe.zrange(key, 0, -1, withscores=True)
        times = [score for _, score in pipe.execute()[1]]
    except redis.RedisError as exc:
        with _redis_state:
            _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER
        logger.warning("scan rate counted in the database: Redis did not answer (%s)", exc)
        return None
    if new_scans > limit:
        return period  # never: the batch alone is over the rate
    # room once all but (limit - new_scans) of the scans in the log are older than the period
    blocking = times[len(times) - (limit - new_scans) - 1] if times else now
    return max(1, math.ceil(blocking + period - now))


def _database_wait(owner, new_scans: int, limit: int, period: int) -> int:
    """Seconds to wait (0: allowed) by the owner's scans created in the last ``period``."""
    now = timezone.now()
    recent = Scan.objects.filter(owner=owner, created_at__gte=now - timedelta(seconds=period))
    if recent[:limit].count() + new_scans <= limit:
        return 0
    if new_scans > limit:
        return period
    # room once the (limit - new_scans + 1)-th newest scan is older than the period
    blocking = recent.order_by("-created_at").values_list("created_at", flat=True)[
        limit - new_scans
    ]
    return max(1, math.ceil((blocking + timedelta(seconds=period) - now).total_seconds()))


def forget(owner) -> None:
    """Clear the owner's Redis counters (tests, and an operator lifting a limit by hand)."""
    client = redis_client()
    if client is None:
        return
    try:
        client.delete(_key(owner.pk))
    except redis.RedisError as exc:
        logger.warning("scan rate counters of %s not cleared: %s", owner.pk, exc)
