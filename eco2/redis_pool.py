"""One Redis connection pool per process for Django's cache.

Django keeps cache backends per async context, and under ASGI every request is a context of
its own: with redis-py's plain ``ConnectionPool`` each request built a new pool and opened a
new Redis connection for the throttle's one read (bench/api_latency.py counted one connection
per upload). This pool class hands every cache backend of a process the same pool per URL and
options, as django-redis does, so connections are reused across requests and threads.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

_pools: dict[tuple, redis.ConnectionPool] = {}
_lock = threading.Lock()


class ProcessConnectionPool(redis.ConnectionPool):
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = super().from_url(url, **kwargs)
            return pool
