"""bench/common.py's CostMeter on PostgreSQL: a phase's row writes are the phase's only, and
told by table."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from bench import common

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statistics"),
]


def test_a_phase_counts_its_own_row_writes_by_table_not_those_just_before_it_nor_the_harnesss(
    test_db_url: str,
) -> None:
    """PostgreSQL reports an idle backend's counters up to 10 s late: rows a warm-up wrote
    right before the phase began must not land in the phase's figures. The rows of the phase
    are told by table, less those the harness wrote itself (counting_queries)."""
    import psycopg

    url = test_db_url
    harness: dict = {}
    with psycopg.connect(url, autocommit=True) as workers:
        workers.execute("CREATE TABLE cost_meter_probe (n integer)")  # reported at once
        # within a second of that report: these wait for the backend's next one (idle: 10 s)
        workers.execute("INSERT INTO cost_meter_probe SELECT generate_series(1, 50)")
        try:
            meter = common.CostMeter([], url)
            meter.start()
            # the phase: 7 inserts and 2 updates by "the workers", 1 insert by the harness
            workers.execute("INSERT INTO cost_meter_probe SELECT generate_series(101, 107)")
            workers.execute("UPDATE cost_meter_probe SET n = n + 1 WHERE n > 105")
            with common.counting_queries(harness):
                get_user_model().objects.create(username="cost-meter-harness")
            phase = meter.stop(harness=harness)
        finally:
            workers.execute("DROP TABLE cost_meter_probe")
    assert harness["tables"] == {"auth_user": 1}
    assert phase["worker_rows_by_table"] == {"cost_meter_probe": 9}
    assert phase["worker_rows"] == 9
