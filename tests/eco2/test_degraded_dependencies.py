"""The web when a dependency is slow or gone, not merely down: uploads stay fast, scans are not
lost, /readyz names the dependency that is slow, and its own checks leave nothing behind.

Faults go through a TCP proxy (tests/support/tcp_proxy.py) in front of the shared services,
which are never touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.db import OperationalError

from scans import services
from tests.conftest import BASE_DIR, subprocess_env

POSTGRESQL = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def run_django(script: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh Django process on this test run's database."""
    code = "import django; django.setup()\n" + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=subprocess_env(DJANGO_SETTINGS_MODULE="eco2.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- /readyz and the connection pool -----------------------------------------------------------
@pytest.mark.skipif(not POSTGRESQL, reason="the connection pool is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_readyz_leaves_no_statement_timeout_on_the_pooled_connection():
    """The probe's 1 s statement_timeout was a session setting: the pool handed the connection
    to the next request, whose queries were cancelled after 1 s (PgBouncer would pass it on
    the same way)."""
    result = run_django(
        """
        from django.db import connection
        from django.test import Client

        response = Client().get("/readyz", HTTP_HOST="localhost")
        assert response.json()["checks"]["database"] == "ok", response.content
        with connection.cursor() as cursor:  # the pool's only connection: the probe's
            cursor.execute("SELECT pg_sleep(1.3)")
            cursor.execute("SHOW statement_timeout")
            print("statement_timeout", cursor.fetchone()[0])
        """,
        DB_POOL_MAX_SIZE="1",
        HEALTH_CHECK_TIMEOUT="1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "statement_timeout 0" in result.stdout


# --- PostgreSQL unreachable: 503 with Retry-After, never a 500 ----------------------------------
# (tests/integration/chaos/test_network_faults.py closes a proxy in front of PostgreSQL under a live web)
@pytest.fixture
def database_unreachable(monkeypatch):
    def unreachable(**kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed')

    monkeypatch.setattr(services, "create_scan", unreachable)


@pytest.mark.django_db
def test_an_upload_by_api_without_the_database_is_a_503_with_retry_after(
    api_client, photo, database_unreachable, settings
):
    settings.DB_UNAVAILABLE_RETRY_AFTER = 7
    response = api_client.post(
        "/api/v1/scans", {"image": photo()}, format="multipart", HTTP_ACCEPT_LANGUAGE="en"
    )

    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    assert response.json() == {
        "detail": "Eco² cannot reach its database right now, so nothing was saved. "
        "Try again in 7 s.",
        "code": "database_unavailable",
    }


@pytest.mark.django_db
def test_an_upload_on_the_page_without_the_database_is_a_503_page_with_retry_after(
    client, user, photo, database_unreachable
):
    client.force_login(user)
    response = client.post("/", {"image": photo(), "hint": "캔"})

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert "데이터베이스에 연결할 수 없어" in response.content.decode()
