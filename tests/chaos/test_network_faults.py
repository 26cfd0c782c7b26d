"""Network faults between a process and a shared service, injected by a TCP proxy
(tests/support/tcp_proxy.py) so that the shared RabbitMQ, Redis and PostgreSQL are never
touched: a connection cut under a running AI worker."""

from __future__ import annotations

import pytest
from django.conf import settings

from ..fakes.openai_server import ok, slow
from ..support.tcp_proxy import TcpProxy
from ..test_pipeline_openai import ANSWER, GUIDANCE, PET_BOTTLE, VISION
from .conftest import (
    assert_all_completed,
    assert_invariants,
    upload_many,
    wait_all_terminal,
    wait_for,
)
from .test_chaos import OPENAI_ENV

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def openai_env(fake_openai, rulebase):
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE))
    return {**OPENAI_ENV, "OPENAI_BASE_URL": fake_openai.base_url}


@pytest.fixture
def broker_proxy(worker_manager):
    """A proxy in front of RabbitMQ; the worker that used it is stopped before it closes."""
    with TcpProxy.for_url(settings.CELERY_BROKER_URL, 5672) as proxy:
        yield proxy
        worker_manager.stop()


def test_an_ai_worker_on_threads_resumes_within_seconds_after_its_broker_connection_is_cut(
    worker_manager,
    fake_openai,
    openai_env,
    broker_proxy,
    api,
):
    """Celery's prefetch-count restoration after a reconnect ran ``basic_qos`` on the pool
    thread that acked, on the connection the consumer thread reads: both blocked until the
    broker dropped the silent connection, about three minutes without progress."""
    fake_openai.set_default_for_schema(VISION, lambda body: slow(1.5, ok(PET_BOTTLE)))
    concurrency = 8
    worker_manager.ensure(
        concurrency=concurrency,
        pool="threads",
        CELERY_BROKER_URL=broker_proxy.url(settings.CELERY_BROKER_URL),
        **openai_env,
    )
    ids = upload_many(api, 24)
    wait_for(
        lambda: len(fake_openai.requests_for_schema(VISION)) >= concurrency,
        30,
        "vision calls in flight on every thread",
    )

    assert broker_proxy.cut() > 0  # the consumer's and the publishers' connections
    called = len(fake_openai.requests_for_schema(VISION))

    # new vision calls: the worker consumes again (the cut tasks' redeliveries find their
    # results stored and only pass the scans on, so every new call is a scan not yet started)
    wait_for(
        lambda: len(fake_openai.requests_for_schema(VISION)) >= called + concurrency,
        20,
        "vision calls started after the reconnect",
    )
    # and the rest of the run takes seconds, not the minutes of a broker heartbeat timeout
    scans = wait_all_terminal(ids, timeout=45)
    assert_all_completed(scans)
    assert_invariants(ids)
