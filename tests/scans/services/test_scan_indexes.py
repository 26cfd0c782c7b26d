"""What scans_scan's indexes are shaped for (Scan.Meta), on PostgreSQL: a step's write in the
middle of a run touches no index (a HOT update), and the jobs that look at every scan every few
seconds (sweeper, relay, backlog) read the active scans only."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from scans import services
from scans.models import Scan, ScanStatus
from scans.services import ACTIVE_STATUSES

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="PostgreSQL's HOT updates and plans"
    ),
]


def scan_table_writes() -> tuple[int, int]:
    """(rows updated, of them HOT) in scans_scan by this test's transaction so far."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(c.oid), pg_stat_get_xact_tuples_hot_updated(c.oid)"
            " FROM pg_class c WHERE c.relname = 'scans_scan'"
        )
        return cursor.fetchone()


def test_the_recognition_step_stores_its_result_without_touching_an_index(rulebase, user, photo):
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    services.run_prepare_step(scan.id)  # the scan now shows the recognition step running
    updated, hot = scan_table_writes()

    services.run_vision_step(scan.id)

    assert Scan.objects.get(pk=scan.id).classification is not None
    assert scan_table_writes() == (updated + 1, hot + 1)


def test_the_jobs_over_all_scans_read_the_active_ones_from_their_index(user, photo):
    services.create_scan(owner=user, image=photo(), hint="")
    stale = timezone.now() - timedelta(minutes=10)
    every_few_seconds = {
        "sweeper": Scan.objects.filter(status__in=ACTIVE_STATUSES, updated_at__lt=stale),
        "relay": Scan.objects.filter(
            status=ScanStatus.QUEUED, dispatched_at=None, updated_at__lt=stale
        ),
        "backlog": Scan.objects.filter(status=ScanStatus.QUEUED),
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: what would it use?
    for job, rows in every_few_seconds.items():
        plan = rows.explain()
        assert "scan_active" in plan, (job, plan)
