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

from .conftest import BASE_DIR, subprocess_env

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
