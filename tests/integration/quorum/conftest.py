"""Quorum queues (CELERY_QUEUE_TYPE=quorum) on the real RabbitMQ: `make test-quorum`.

The whole test process's Celery app takes its queues from the environment at import, and a
queue's type cannot change in a vhost, so these tests run in their own pytest invocation,
against a vhost of their own (the Makefile creates it); every other pass skips them.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.conftest import SERVICES_MODE

QUORUM_MODE = SERVICES_MODE and settings.CELERY_QUEUE_TYPE == "quorum"


def pytest_collection_modifyitems(config, items):
    if QUORUM_MODE:
        return
    skip = pytest.mark.skip(
        reason="quorum-queue tests run in their own pass on RabbitMQ: `make test-quorum`"
    )
    for item in items:
        if "tests/integration/quorum/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
