"""Network faults between a process and a shared service, injected by a TCP proxy
(tests/support/tcp_proxy.py) so that the shared RabbitMQ, Redis and PostgreSQL are never
touched: a connection cut under a running AI worker; a live web (uvicorn) whose broker or
Redis is partitioned, or whose PostgreSQL is gone."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.utils import timezone
from rest_framework.authtoken.models import Token

from scans import services
from scans.models import Scan, ScanStatus
from tests.conftest import database_url_for_subprocess
from tests.fakes.openai_server import ok, slow
from tests.integration.chaos.conftest import (
    assert_all_completed,
    assert_invariants,
    distinct_photo,
    upload_many,
    wait_all_terminal,
)
from tests.integration.chaos.test_chaos import OPENAI_ENV
from tests.integration.pipeline.test_pipeline_openai import ANSWER, GUIDANCE, PET_BOTTLE, VISION
from tests.support.live_web import WebClient, serve_web
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def openai_env(fake_openai, rulebase):
    fake_openai.set_default_for_schema(VISION, lambda body: ok(PET_BOTTLE))
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


# --- the web with a partitioned broker or Redis, or PostgreSQL gone ----------------------------
# A partition is not a refusal: the proxy accepts connections and never answers, so every
# wait on that dependency lasts until its timeout.
FAST_UPLOAD = 1.0  # seconds: what an upload may take while a dependency is partitioned


@pytest.fixture
def web_client(user):
    """An HTTP client for a live web (tests/support/live_web.py), with the user's API token."""
    token = Token.objects.create(user=user)
    clients = []

    def connect(url: str) -> WebClient:
        client = WebClient(url, headers={"Authorization": f"Token {token.key}"})
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def timed_upload(client: WebClient, n: int) -> tuple[str, float]:
    photo = distinct_photo(n)
    started = time.monotonic()
    response = client.post(
        "/api/v1/scans",
        files={"image": photo},
        data={"hint": f"생수병 {n}"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    return response.json()["task_id"], elapsed


def relay_what_is_owed(ticks: int = 5) -> None:
    """What beat's *relay pending dispatches* does every 10 s, run now (the grace is over),
    tick after tick until nothing is owed: a publish that fails on a connection an earlier
    broker cut left stale is retried on the next tick, as beat would."""
    for _ in range(ticks):
        services.relay_pending_dispatches(now=timezone.now() + services.DISPATCH_GRACE)
        if not Scan.objects.filter(status=ScanStatus.QUEUED, dispatched_at=None).exists():
            return
        time.sleep(1)


def test_uploads_answer_at_once_while_the_broker_does_not_answer_and_the_relay_completes_them(
    worker_manager, openai_env, web_client, tmp_path
):
    with TcpProxy.for_url(settings.CELERY_BROKER_URL, 5672) as broker:
        # a small pool, as any pool under load: the uploads' publishes must not hold it
        web_env = {"CELERY_BROKER_URL": broker.url(settings.CELERY_BROKER_URL)}
        with serve_web(tmp_path / "web.log", DB_POOL_MAX_SIZE="2", **web_env) as url:
            client = web_client(url)
            ids = [timed_upload(client, 0)[0]]  # the web's broker connection is open
            broker.blackhole()
            uploads = [timed_upload(client, n) for n in range(1, 9)]
            ids += [task_id for task_id, _ in uploads]
            readiness = client.get("/readyz")

    slowest = max(elapsed for _, elapsed in uploads)
    assert slowest < FAST_UPLOAD, [round(elapsed, 2) for _, elapsed in uploads]
    assert readiness.status_code == 503
    checks = readiness.json()["checks"]
    assert checks["broker"].startswith("error"), checks
    assert checks["database"] == "ok" and checks["redis"] == "ok", checks

    worker_manager.ensure(**openai_env)
    relay_what_is_owed()
    scans = wait_all_terminal(ids, timeout=60)
    assert_all_completed(scans)
    assert_invariants(ids)


def test_uploads_answer_at_once_while_redis_does_not_answer(
    worker_manager, openai_env, web_client, tmp_path
):
    with TcpProxy.for_url(settings.REDIS_URL, 6379) as redis:
        web_env = {"REDIS_URL": redis.url(settings.REDIS_URL)}
        with serve_web(tmp_path / "web.log", **web_env) as url:
            client = web_client(url)
            ids = [timed_upload(client, 0)[0]]  # the web's Redis connections are open
            redis.blackhole()
            uploads = [timed_upload(client, n) for n in range(1, 9)]
            ids += [task_id for task_id, _ in uploads]
            readiness = client.get("/readyz")
            status = client.get(f"/api/v1/scans/{ids[-1]}")

    slowest = max(elapsed for _, elapsed in uploads)
    assert slowest < FAST_UPLOAD, [round(elapsed, 2) for _, elapsed in uploads]
    assert readiness.status_code == 503
    checks = readiness.json()["checks"]
    assert checks["redis"].startswith("error"), checks
    assert checks["database"] == "ok" and checks["broker"] == "ok", checks
    assert status.status_code == 200  # from the database

    worker_manager.ensure(**openai_env)
    scans = wait_all_terminal(ids, timeout=60)
    assert_all_completed(scans)
    assert_invariants(ids)


def test_uploads_answer_503_with_retry_after_while_postgresql_is_unreachable(
    web_client, user, tmp_path
):
    database = settings.DATABASES["default"]
    password = "correct-horse-battery"
    # the server checks passwords with its own hashers, not the tests' fast MD5
    user.password = PBKDF2PasswordHasher().encode(password, "eco2salt", iterations=1000)
    user.save(update_fields=["password"])
    with TcpProxy(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)) as postgresql:
        db_url = postgresql.url(database_url_for_subprocess())
        # the pool's wait for a connection bounds the answer (DB_POOL_TIMEOUT)
        with serve_web(tmp_path / "web.log", DATABASE_URL=db_url, DB_POOL_TIMEOUT="2") as url:
            api = web_client(url)
            browser = WebClient(url)
            login = browser.get("/accounts/login/")
            csrf = browser.cookies["csrftoken"]
            signed_in = browser.post(
                "/accounts/login/",
                data={"username": user.username, "password": password, "csrfmiddlewaretoken": csrf},
                headers={"Referer": f"{url}/accounts/login/"},
            )
            assert login.status_code == 200 and signed_in.status_code == 302, signed_in.text
            assert browser.get("/").status_code == 200

            postgresql.close()
            photo = distinct_photo(1)
            started = time.monotonic()
            by_api = api.post("/api/v1/scans", files={"image": photo})
            api_seconds = time.monotonic() - started
            page = browser.get("/")
            photo = distinct_photo(2)
            by_form = browser.post(
                "/",
                files={"image": photo},
                data={"hint": "캔", "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                headers={"Referer": f"{url}/"},
            )
            browser.close()

    assert by_api.status_code == 503, by_api.text
    assert int(by_api.headers["Retry-After"]) > 0
    assert by_api.json()["code"] == "database_unavailable"
    assert "데이터베이스" in by_api.json()["detail"]  # "the database", in the default language
    assert api_seconds < 5
    for response in (page, by_form):
        assert response.status_code == 503, response.text[:500]
        assert int(response.headers["Retry-After"]) > 0
        assert "text/html" in response.headers["Content-Type"]
        assert "데이터베이스" in response.text  # Korean, the default language
