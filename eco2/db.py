"""Database connection helpers shared by the pipeline and its providers."""

from __future__ import annotations

from contextlib import nullcontext

from django.db import IntegrityError, connection, transaction
from django.db.models import Model


def release_db_connection() -> None:
    """Give the DB connection back before a slow call (a provider's HTTP request).

    On a threads pool each task in flight would otherwise hold a connection for the whole
    call: 128 concurrent AI steps would need 128 PostgreSQL connections. With the connection
    pool (DB_POOL_MAX_SIZE) the connection goes back to the pool; without it, reconnecting
    for the writes afterwards costs a few milliseconds. Inside a transaction it stays, and so
    does a persistent connection (CONN_MAX_AGE > 0, as a prefork child's, eco2/celery.py): it
    is this process's own, and nothing else waits for it.
    """
    if not connection.in_atomic_block and connection.settings_dict.get("CONN_MAX_AGE") == 0:
        connection.close()


def insert_unless_exists(instance: Model) -> bool:
    """INSERT ``instance``; False if a unique constraint refused it (the row exists).

    One statement in autocommit (how workers and after-response work run); inside a
    transaction the INSERT gets a savepoint, so a refused row does not break the transaction.
    """
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            instance.save(force_insert=True)
    except IntegrityError:
        return False
    return True
