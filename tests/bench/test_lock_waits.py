"""bench/common.py's LockWaits on PostgreSQL: sessions queued behind one row's lock show."""

import time

import pytest
from django.db import connection

from bench import common

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's sessions"),
]


def test_a_session_waiting_for_a_row_another_holds_is_counted_with_its_statement(test_db_url):
    import psycopg

    url = test_db_url
    with (
        psycopg.connect(url, autocommit=True) as setup,
        psycopg.connect(url) as holder,
        psycopg.connect(url, autocommit=True) as waiter,
    ):
        setup.execute("CREATE TABLE lock_waits_probe (id integer PRIMARY KEY, n integer)")
        try:
            setup.execute("INSERT INTO lock_waits_probe VALUES (1, 0)")
            quiet = common.LockWaits(url, interval=0.01)
            quiet.start()
            time.sleep(0.3)
            assert quiet.stop()["lock_waiting_sessions"] == 0, "nothing waits yet"

            holder.execute("UPDATE lock_waits_probe SET n = n + 1 WHERE id = 1")  # held
            waits = common.LockWaits(url, interval=0.01)
            waiter.execute("SET statement_timeout = '1s'")
            waits.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                waiter.execute("UPDATE lock_waits_probe SET n = n + 1 WHERE id = 1")
            figures = waits.stop()
            holder.rollback()
        finally:
            setup.execute("DROP TABLE lock_waits_probe")
    assert figures["samples"] > 10
    assert 0.5 < figures["lock_waiting_sessions"] <= 1.0, figures
    assert figures["most_waited"].startswith("UPDATE lock_waits_probe")
