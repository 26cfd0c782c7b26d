"""Database connections of real workers: kept by prefork children, handed back by threads.

Celery's Django fixup closes every connection around every task; eco2/celery.py lets Django's
per-request rule decide instead. PostgreSQL shows each connection as a backend, so these run
in the real-services pass.
"""

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import SERVICES_MODE, wait_for_scan

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not SERVICES_MODE, reason="PostgreSQL backends: real-services pass"),
]


def worker_backends() -> set[tuple[int, str]]:
    """(pid, start) of every other connection to the test database: the worker's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return set(cursor.fetchall())


def scan_to_completion(user, photo) -> None:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(
        "/api/v1/scans", {"image": photo(), "hint": "페트병"}, format="multipart"
    )
    assert response.status_code == 202, response.content
    assert wait_for_scan(response.json()["task_id"]).status == "completed"


def test_prefork_children_keep_their_connection_between_tasks(celery_worker, rulebase, user, photo):
    scan_to_completion(user, photo)
    after_first = worker_backends()
    scan_to_completion(user, photo)
    after_second = worker_backends()

    # before: every task connected anew (a backend fork each) and closed again
    assert after_first, "the worker's children keep a connection once their tasks are done"
    assert after_first <= after_second, "the second scan's tasks reused those connections"
    assert len(after_second) <= 2, "one connection per child (--concurrency=2)"


def test_a_threads_worker_hands_pooled_connections_back_after_each_task(
    worker_manager, rulebase, user, photo
):
    # 4 threads share 2 pooled connections: a thread that kept one after its task (a write
    # after the connection was handed back) would starve the others into PoolTimeout
    worker = worker_manager.ensure(
        concurrency=4, pool="threads", DB_POOL_MAX_SIZE="2", DB_POOL_TIMEOUT="3"
    )
    client = APIClient()
    client.force_authenticate(user)
    task_ids = []
    for _ in range(8):
        response = client.post(
            "/api/v1/scans", {"image": photo(), "hint": "페트병"}, format="multipart"
        )
        assert response.status_code == 202, response.content
        task_ids.append(response.json()["task_id"])

    statuses = [wait_for_scan(task_id, timeout=60).status for task_id in task_ids]

    assert statuses == ["completed"] * 8
    assert "couldn't get a connection" not in worker.log()
    assert len(worker_backends()) <= 2, "the pool's two connections, no more"
