"""A worker's kept database connection between tasks: Django's health check (CONN_HEALTH_CHECKS,
a SELECT 1 before a task's first query) only after the connection sat idle
(WORKER_DB_CHECK_AFTER_IDLE, eco2/celery.py), not between back-to-back tasks."""

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from django.db import connection

from eco2.celery import (
    _check_db_connections_only_after_idle,
    _close_old_db_connections,
    _note_db_connections_used,
)

pytestmark = pytest.mark.django_db(transaction=True)  # workers run in autocommit

TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


def _next_task() -> None:
    """What the worker runs between two tasks: the postrun receivers, then the prerun ones."""
    _close_old_db_connections(sender=TASK)
    _note_db_connections_used(sender=TASK)
    _close_old_db_connections(sender=TASK)
    _check_db_connections_only_after_idle(sender=TASK)


@pytest.fixture
def health_checks(monkeypatch) -> Iterator[list[bool]]:
    """A prefork child's kept connection (WORKER_CONN_MAX_AGE), its health checks counted."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 300)
    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", True)
    connection.close()
    connection.ensure_connection()
    checks: list[bool] = []
    is_usable = connection.is_usable

    def counted() -> bool:
        checks.append(True)
        return is_usable()

    monkeypatch.setattr(connection, "is_usable", counted)
    yield checks
    connection.close()


def _query() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_back_to_back_tasks_do_not_check_their_connection_again(settings, health_checks):
    settings.WORKER_DB_CHECK_AFTER_IDLE = 60
    _query()  # the first task
    _next_task()
    _query()
    _next_task()
    _query()

    assert health_checks == []
    assert connection.connection is not None, "the same connection, kept"


def test_a_connection_idle_longer_is_checked_before_it_is_used(settings, health_checks):
    settings.WORKER_DB_CHECK_AFTER_IDLE = 0  # every gap between tasks is "longer"
    _query()
    _next_task()
    _query()

    assert health_checks == [True]


def test_a_connection_whose_task_saw_an_error_is_checked(settings, health_checks):
    settings.WORKER_DB_CHECK_AFTER_IDLE = 60
    _query()
    connection.errors_occurred = True  # a query of the task failed (Django sets it)
    _next_task()
    _query()

    assert health_checks == [True]
