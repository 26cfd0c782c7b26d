"""Live progress: the Scan row is the source of truth; Redis is an optional fast path.

When ``REDIS_URL`` is set, every state change is mirrored into the hash ``task:{task_id}``
(status, step, progress, updated_at) with a TTL, and so are the current step's retries
(``retries``, JSON, written by the ledger when an attempt of a step retries or fails), so an
open status stream polls Redis alone instead of the database. Redis is never on the critical path: if it is down, the pipeline carries on and
readers fall back to the database.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


@cache
def _client(url: str, timeout: float) -> redis.Redis:
    # short timeouts (REDIS_TIMEOUT): a Redis that is down or partitioned (connections
    # accepted, nothing answered) must cost an upload or a step a fraction of a second
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, decode_responses=True
    )


def redis_client() -> redis.Redis | None:
    return _client(settings.REDIS_URL, settings.REDIS_TIMEOUT) if settings.REDIS_URL else None


def progress_key(task_id: str) -> str:
    return f"task:{task_id}"


def _mirror(task_id: str, fields: dict[Any, str | int], what: str) -> None:
    """Write ``fields`` into the scan's hash and renew its TTL, in one round trip; a Redis
    error is logged and dropped (the database holds the truth)."""
    client = redis_client()
    if client is None:
        return
    key = progress_key(task_id)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, settings.SCAN_PROGRESS_TTL)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("%s for %s not mirrored to Redis: %s", what, task_id, exc)


def mirror_progress(
    task_id: str, *, status: str, step: str, progress: int, updated_at: str
) -> None:
    _mirror(
        task_id,
        {"status": status, "step": step, "progress": progress, "updated_at": updated_at},
        "progress",
    )


def mirror_retries(task_id: str, retries: dict[str, Any]) -> None:
    """The retries of the scan's current step (scans.events.step_retries), beside its state."""
    _mirror(task_id, {"retries": json.dumps(retries, ensure_ascii=False)}, "retries")


def read_progress(task_id: str) -> dict | None:
    """The mirrored progress (with ``retries`` when some were mirrored), or None when Redis is
    not configured, down or has no state for the scan."""
    client = redis_client()
    if client is None:
        return None
    try:
        data = client.hgetall(progress_key(task_id))
    except redis.RedisError:
        return None
    if "status" not in data:  # no entry, or only retries mirrored after the state expired
        return None
    data["progress"] = int(data.get("progress", 0))
    if "retries" in data:
        try:
            data["retries"] = json.loads(data["retries"])
        except ValueError:
            del data["retries"]
    return data
