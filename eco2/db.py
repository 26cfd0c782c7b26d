"""Database connection helpers shared by the pipeline and its providers."""

from __future__ import annotations

from django.db import connection


def release_db_connection() -> None:
    """Give the DB connection back before a slow call (a provider's HTTP request).

    On a threads pool each task in flight would otherwise hold a connection for the whole
    call: 128 concurrent AI steps would need 128 PostgreSQL connections. With the connection
    pool (DB_POOL_MAX_SIZE) the connection goes back to the pool; without it, reconnecting
    for the writes afterwards costs a few milliseconds. Inside a transaction it stays.
    """
    if not connection.in_atomic_block:
        connection.close()
