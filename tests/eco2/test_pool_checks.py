"""A pooled PostgreSQL connection (DB_POOL_MAX_SIZE: the web, threads-pool workers) is checked
before use only after it sat in the pool (DB_POOL_CHECK_AFTER_IDLE, eco2/postgresql): Django's
pool sent a round trip before every request and every step otherwise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from eco2.postgresql.base import DatabaseWrapper
from tests.conftest import BASE_DIR

POSTGRES_ONLY = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the pool is PostgreSQL's (psycopg_pool)"
)


@pytest.fixture
def pooled() -> Iterator[DatabaseWrapper]:
    """A connection to the test database through a pool of one, as the web's settings make it
    (eight there)."""
    settings_dict = {
        **connection.settings_dict,
        "ENGINE": "eco2.postgresql",
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {
            **connection.settings_dict.get("OPTIONS", {}),
            "pool": {"min_size": 1, "max_size": 1, "timeout": 5.0},
        },
    }
    wrapper = DatabaseWrapper(settings_dict, alias="pool_checks")
    yield wrapper
    wrapper.close()
    wrapper.close_pool()  # type: ignore[attr-defined]  # Django 5.1's pool: not in the stubs


@pytest.fixture
def checks(monkeypatch) -> list[bool]:
    """The pool's check of a connection (psycopg_pool's round trip), counted."""
    counted: list[bool] = []
    check = ConnectionPool.check_connection

    def counting(conn) -> None:
        counted.append(True)
        check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
    return counted


def backend_pid(wrapper: DatabaseWrapper) -> int:
    """What a request does: take a connection, query, hand it back."""
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    wrapper.close()
    return pid


@POSTGRES_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_connection_handed_back_a_moment_ago_is_not_checked_again(settings, pooled, checks):
    settings.DB_POOL_CHECK_AFTER_IDLE = 60
    pids = {backend_pid(pooled) for _ in range(4)}
    assert len(pids) == 1  # one connection, taken four times
    assert checks == [True]  # once: new to this process, never handed back yet


@POSTGRES_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_sat_in_the_pool_longer_is_checked_before_use(settings, pooled, checks):
    settings.DB_POOL_CHECK_AFTER_IDLE = 0
    for _ in range(3):
        backend_pid(pooled)
    assert checks == [True] * 3


@POSTGRES_ONLY
@pytest.mark.django_db(transaction=True)
def test_a_connection_that_broke_in_the_pool_is_replaced_before_a_request_uses_it(
    settings, pooled, checks
):
    """PostgreSQL ended the session while the connection sat in the pool (a restart, a
    failover): the next request gets a working connection, not an error."""
    settings.DB_POOL_CHECK_AFTER_IDLE = 0
    broken = backend_pid(pooled)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [broken])
    assert backend_pid(pooled) != broken
    assert len(checks) >= 2  # the broken one's check failed; its replacement's passed


def test_the_settings_choose_this_backend_with_a_pool_on_postgresql():
    code = (
        "from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(d['ENGINE'], d['CONN_HEALTH_CHECKS'], s.DB_POOL_CHECK_AFTER_IDLE)"
    )

    def engine(**env: str) -> list[str]:
        result = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            cwd=BASE_DIR,
            env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "eco2.settings", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    pg = "postgres://postgres@127.0.0.1:5432/eco2"
    assert engine(DATABASE_URL=pg, DB_POOL_MAX_SIZE="8") == ["eco2.postgresql", "False", "1.0"]
    # no pool: Django's backend, its health check of kept connections (the prefork workers')
    assert engine(DATABASE_URL=pg) == ["django.db.backends.postgresql", "True", "1.0"]
