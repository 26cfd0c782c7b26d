"""Database helpers shared by the apps: connections for the pipeline and its providers, deletes
in bounded batches (retention), and the web's answer when the database is unavailable."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import get_language
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Model)

# The database failed, not the work: unreachable, a dropped session, a deadlock victim, SQLite's
# "database is locked". The web answers 503 with Retry-After; a pipeline step tries again.
DATABASE_FAILURES: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


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


# Primary keys no row has (a UUID key, an integer one): the query is compiled with one, and
# its parameter is the one a call replaces with the key it asks for.
_PLACEHOLDER_UUID = uuid.UUID(int=0)
_PLACEHOLDER_INT = -(2**31)
_compiled: dict[tuple[str, str], tuple[type[Model], str, tuple[Any, ...], int]] = {}


def get_precompiled(name: str, rows: Callable[[Any], QuerySet[M]], pk: Any) -> M | None:
    """The row of ``rows(pk)`` (a query of one model by its primary key: a UUID, or an
    integer passed as an int), or None.

    For a query a hot path runs with the same shape every time (a pipeline step's load of its
    scan): building and compiling a queryset cost ~1 ms of CPU, several times the query itself
    (bench/pipeline_overhead.py). Here ``rows`` is built and compiled once per process and
    database, under ``name``, and each call runs that SQL through ``Manager.raw()`` with its
    key put in. The instance comes with the query's annotations, not with select_related:
    raw() fills no relation.
    """
    key = (name, connection.alias)
    compiled = _compiled.get(key)
    if compiled is None:
        placeholder = _PLACEHOLDER_INT if isinstance(pk, int) else _PLACEHOLDER_UUID
        query = rows(placeholder)
        sql, params = query.query.get_compiler(connection.alias).as_sql()
        position = params.index(query.model._meta.pk.get_db_prep_value(placeholder, connection))
        compiled = _compiled[key] = (query.model, sql, params, position)
    model, sql, params, position = compiled
    values = list(params)
    values[position] = model._meta.pk.get_db_prep_value(pk, connection)
    return cast("M | None", next(iter(model._default_manager.raw(sql, values)), None))


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """503 with Retry-After, never a 500, when the database cannot serve a request.

    PostgreSQL unreachable (or no pooled connection within DB_POOL_TIMEOUT) raises
    OperationalError or InterfaceError from wherever the view first needs the database: the
    session, the API token, the upload's INSERT. The API answers JSON like its other errors
    (``code: database_unavailable``); pages get a standalone page that needs no database (no
    user, no session).
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DATABASE_FAILURES):
            return None
        logger.error("database unavailable for %s %s: %r", request.method, request.path, exception)
        retry_after = settings.DB_UNAVAILABLE_RETRY_AFTER
        message = _(
            "Eco² cannot reach its database right now, so nothing was saved. Try again in %(seconds)d s."
        ) % {"seconds": retry_after}
        if request.path_info.startswith("/api/"):
            response = JsonResponse({"detail": message, "code": "database_unavailable"}, status=503)
        else:
            html = render_to_string(
                "database_unavailable.html",
                {"message": message, "LANGUAGE_CODE": get_language()},
            )
            response = HttpResponse(html, status=503)
        response["Retry-After"] = str(retry_after)
        return response


def in_batches(
    rows: QuerySet,
    handle: Callable[[list[tuple[Any, ...]]], int],
    *,
    fields: tuple[str, ...] = ("pk",),
    batch_size: int,
    max_seconds: float,
) -> tuple[int, int]:
    """Hand ``rows`` to ``handle`` a batch of at most ``batch_size`` at a time (their
    ``fields``, the primary key first), until none is left or ``max_seconds`` have passed.
    ``handle`` must take its batch out of ``rows`` (delete it, or change what selects it) and
    says how many rows it dealt with; returns (rows dealt with, batches)."""
    done = batches = 0
    deadline = time.monotonic() + max_seconds
    while True:
        batch = list(rows.order_by().values_list(*fields)[:batch_size])
        if not batch:
            break
        done += handle(batch)
        batches += 1
        if len(batch) < batch_size or time.monotonic() > deadline:
            break
    return done, batches


def delete_in_batches(rows: QuerySet, *, batch_size: int, max_seconds: float) -> tuple[int, int]:
    """Delete ``rows`` a batch at a time, each batch in a short transaction of its own (no long
    lock), until none is left or ``max_seconds`` have passed; returns (rows of that model
    deleted, batches)."""
    model = rows.model

    def delete(batch: list[tuple[Any, ...]]) -> int:
        with transaction.atomic():
            _, per_model = model.objects.filter(pk__in=[pk for (pk,) in batch]).delete()
        return per_model.get(model._meta.label, 0)

    return in_batches(rows, delete, batch_size=batch_size, max_seconds=max_seconds)
