"""bench/common.py's CostMeter on PostgreSQL: a phase's row writes are the phase's only."""

import pytest
from django.db import connection

from bench import common

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's statistics"),
]


def test_rows_written_just_before_a_phase_are_not_counted_in_it(test_db_url):
    """PostgreSQL reports an idle backend's counters up to 10 s late: rows a warm-up wrote
    right before the phase began must not land in the phase's figures."""
    import psycopg

    url = test_db_url
    with psycopg.connect(url, autocommit=True) as warm_up:
        warm_up.execute("CREATE TABLE cost_meter_probe (n integer)")  # reported at once
        # within a second of that report: these wait for the backend's next one (idle: 10 s)
        warm_up.execute("INSERT INTO cost_meter_probe SELECT generate_series(1, 50)")
        try:
            meter = common.CostMeter([], url)
            meter.start()
            phase = meter.stop()  # nothing written during the phase
        finally:
            warm_up.execute("DROP TABLE cost_meter_probe")
    assert phase["rows"] == 0
