"""Publishing a scan's chain from a web request (or any caller the outbox relay backs up):
one short try, every wait bounded, without a database connection.

The upload's publish runs after its 202 was sent (eco2/after_response.py), but it still held
what the request held. With a broker that accepted connections and never answered (a
partition, not a refusal), each upload kept its pooled database connection for ~8 s (two
connection attempts of Celery's 4 s), the next uploads waited for a connection, and /readyz
blamed the database. Now the connection is handed back first, each wait lasts at most
SCAN_PUBLISH_TIMEOUT, and after a broker that did not answer in time the next publishes are
not tried for BROKER_BACKOFF seconds: the relay (beat, every 10 s) publishes what is owed.
"""

from __future__ import annotations

import logging
import time
from functools import cache

from celery.result import AsyncResult
from django.conf import settings
from kombu.connection import ConnectionPool

from eco2.celery import app
from eco2.db import release_db_connection

logger = logging.getLogger(__name__)

# One retry: a pooled connection the broker closed meanwhile (a restart) is replaced at once.
PROMPT_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}
BROKER_BACKOFF = 5.0  # seconds without prompt publishes after the broker did not answer in time

_backing_off_until = 0.0


class BrokerBackingOff(ConnectionError):
    """Not tried: the broker did not answer a publish a moment ago."""


@cache
def _connections(timeout: float) -> ConnectionPool:
    """This process's broker connections for prompt publishes, which connect within
    ``timeout`` (Celery's own pool keeps broker_connection_timeout, for the workers)."""
    return app.connection_for_write(connect_timeout=timeout).Pool(limit=app.conf.broker_pool_limit)


def publish_promptly(signature) -> AsyncResult:
    """Publish ``signature`` (a chain, a chord) once, waiting at most about
    SCAN_PUBLISH_TIMEOUT per step (a connection, the connect, the send, the confirm); raises
    when it was not published, and BrokerBackingOff without trying while backing off."""
    global _backing_off_until
    if time.monotonic() < _backing_off_until:
        raise BrokerBackingOff("the broker did not answer a moment ago")
    timeout = settings.SCAN_PUBLISH_TIMEOUT
    release_db_connection()  # nothing else may wait for it while this waits for the broker
    started = time.monotonic()
    try:
        with _connections(timeout).acquire(block=True, timeout=timeout) as connection:
            return signature.apply_async(
                connection=connection,
                retry_policy=PROMPT_RETRY_POLICY,
                timeout=timeout,
                confirm_timeout=timeout,
            )
    except Exception:
        # a refusal costs nothing; a broker that lets us wait is left alone for a while
        if time.monotonic() - started >= timeout:
            _backing_off_until = time.monotonic() + BROKER_BACKOFF
            logger.warning(
                "the broker did not answer within %.1f s: publishes from requests are left to "
                "the relay for %.0f s",
                timeout,
                BROKER_BACKOFF,
            )
        raise
