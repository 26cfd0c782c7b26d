"""Flower's configuration, read from the working directory by ``celery -A eco2 flower``.

Flower can revoke and terminate tasks, resize pools, shut workers down and (through its API)
run any registered task, so it never starts without authentication:

    FLOWER_BASIC_AUTH    "user:password[,user2:password2]"   required
    FLOWER_URL_PREFIX    e.g. "flower" when served under https://host/flower/   optional
    FLOWER_PORT          the port (make flower; default 5555)

    FLOWER_BASIC_AUTH=ops:s3cret make flower

Flower keeps its task list in memory only (persistent=False) and at most 10,000 tasks (its
default of 100,000 grows to gigabytes on a busy system). Its own ``/metrics`` and
``/healthcheck`` are exempt from authentication upstream: do not expose Flower's port to the
internet; put it behind a proxy or bind it to a private address (FLOWER_ADDRESS). Eco²'s
authenticated ``/metrics`` exports task counters, latency and queue depths for Prometheus.
"""

import os

_raw_auth = os.environ.get("FLOWER_BASIC_AUTH", "").strip()
_users = [entry.strip() for entry in _raw_auth.split(",") if entry.strip()]
if not _users:
    raise SystemExit(
        "Flower refuses to start: FLOWER_BASIC_AUTH is not set. An unauthenticated Flower lets "
        "anyone run, revoke or terminate tasks. Set FLOWER_BASIC_AUTH='user:password"
        "[,user2:password2]' (see flowerconfig.py)."
    )
for _entry in _users:
    _user, _sep, _password = _entry.partition(":")
    if not (_user and _sep and _password):
        raise SystemExit(
            "Flower refuses to start: FLOWER_BASIC_AUTH entries must look like 'user:password' "
            f"(got an entry for {_user or 'an empty user'!r} without a password)."
        )

basic_auth = _users
if os.environ.get("FLOWER_URL_PREFIX"):
    url_prefix = os.environ["FLOWER_URL_PREFIX"].strip("/")
persistent = False
max_tasks = 10000
# Flower would otherwise send `enable_events` to every worker every few seconds, switching task
# events on in the threads-pool AI workers too, where they deadlock with publisher confirms
# (eco2/celery.py: _no_task_events_on_threaded_pools). Prefork workers send events by config.
enable_events = False
