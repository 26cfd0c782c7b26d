"""Monitoring: the protected Prometheus /metrics (task metrics written by real prefork worker
processes, read back by the web process), /healthz and /readyz, and Flower behind basic auth."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from eco2 import health
from eco2.metrics import wipe_if_first
from scans import services
from scans.models import DeadLetter, Scan, ScanStatus, ScanTotals
from tests.conftest import BASE_DIR, SERVICES_MODE, subprocess_env, wait_for_scan
from tests.fakes.providers import CRASH_HINT
from tests.support.processes import stop

TOKEN = "metrics-test-token"


# --- helpers --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def scrape(client: Client | None = None) -> str:
    client = client or Client()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return response.content.decode()


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


# --- /metrics access ------------------------------------------------------------------------
@pytest.mark.django_db
def test_metrics_needs_the_token_or_a_staff_session(token, user, staff_user):
    client = Client()

    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")

    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401

    right = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain; version=")
    assert "eco2_scans" in right.content.decode()

    client.force_login(user)
    assert client.get("/metrics").status_code == 401, "a session is not enough without staff"
    client.force_login(staff_user)
    staff = client.get("/metrics")
    assert staff.status_code == 200
    assert staff["Content-Type"].startswith("text/plain")


@pytest.mark.django_db
def test_metrics_without_a_configured_token_is_forbidden_and_says_why(settings, staff_user):
    settings.METRICS_TOKEN = ""
    client = Client()
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer anything"}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 403
        assert "METRICS_TOKEN is not set" in response.content.decode()

    client.force_login(staff_user)
    assert client.get("/metrics").status_code == 200, "staff still get in"


# --- scrape-time gauges ---------------------------------------------------------------------
@pytest.mark.django_db
def test_app_gauges_reflect_the_database(token, user, settings):
    # what is collected, not how fast: a broker just restarted by the chaos tests may take
    # longer than the production time box to answer the queue-depth part
    settings.METRICS_COLLECT_TIMEOUT = 15

    def scan(status, **fields):
        return Scan.objects.create(owner=user, image="scans/x.jpg", status=status, **fields)

    # what ended is counted when it ends (the running totals), not summed over the table:
    # scans stored as completed here, bypassing the services, add nothing
    scan(ScanStatus.COMPLETED, input_tokens=100, output_tokens=10, cost_usd=Decimal("0.0015"))
    ScanTotals.objects.update_or_create(
        pk=1,
        defaults={"input_tokens": 120, "cached_input_tokens": 40, "output_tokens": 15,
                  "cost_usd": Decimal("0.002"), "ended_completed": 2, "ended_needs_input": 1},
    )  # fmt: skip
    failed = scan(ScanStatus.QUEUED)
    assert services.fail_scan(failed.pk, code="boom", message="boom")  # counted: one more
    scan(ScanStatus.QUEUED)
    scan(ScanStatus.QUEUED)
    scan(ScanStatus.PROCESSING)
    DeadLetter.objects.create(scan=failed, task_id="t1", task_name="x", reason_code="boom")
    DeadLetter.objects.create(
        scan=failed, task_id="t2", task_name="x", reason_code="boom", redriven_at=timezone.now()
    )
    DeadLetter.objects.create(
        scan=failed, task_id="t3", task_name="x", reason_code="boom", resolved_at=timezone.now()
    )

    if SERVICES_MODE:
        # a queue is on the broker once something declared it (a worker at start); on a fresh
        # RabbitMQ where no worker ran yet it is missing from the gauge, as documented
        from eco2.celery import app
        from scans.broker import declare_dead_letter_queue

        with app.connection_for_write() as conn:
            for queue in app.conf.task_queues:
                queue(conn.default_channel).declare()
        declare_dead_letter_queue()  # as a worker does at start (scans/worker_start.py)

    text = scrape()

    assert value(text, "eco2_scans", status="queued") == 2
    assert value(text, "eco2_scans", status="processing") == 1
    assert value(text, "eco2_scans", status="completed") is None, "ended runs are counters"
    assert value(text, "eco2_scans_ended_total", status="completed") == 2
    assert value(text, "eco2_scans_ended_total", status="failed") == 1
    assert value(text, "eco2_scans_ended_total", status="needs_input") == 1
    assert value(text, "eco2_provider_tokens_total", kind="input") == 120
    assert value(text, "eco2_provider_tokens_total", kind="cached_input") == 40
    assert value(text, "eco2_provider_tokens_total", kind="output") == 15
    assert value(text, "eco2_provider_cost_usd_total") == pytest.approx(0.002)
    assert value(text, "eco2_dead_letters", state="pending") == 1
    assert value(text, "eco2_dead_letters", state="redriven") == 1
    assert value(text, "eco2_dead_letters", state="resolved") == 1
    assert value(text, "eco2_queue_depth", queue="scan.ai.pipeline") is not None
    assert value(text, "eco2_queue_depth", queue="notification") is not None
    for part in ("queues", "scans", "provider_usage", "dead_letters"):
        assert value(text, "eco2_metrics_collector_up", part=part) == 1
    if SERVICES_MODE:  # RabbitMQ has the dead-letter queue
        assert value(text, "eco2_dead_letters", state="broker_dlq") is not None


@pytest.mark.django_db
def test_uploads_refused_by_a_full_backlog_are_counted(
    token, backlog_limit, user, api_client, photo
):
    backlog_limit(1)
    Scan.objects.create(owner=user, image="scans/x.jpg")
    before = value(scrape(), "eco2_scans_refused_total", reason="backlog") or 0

    for _ in range(2):
        response = api_client.post("/api/v1/scans", {"image": photo()}, format="multipart")
        assert response.status_code == 503
    batch = {"images": [photo(), photo(), photo()]}
    assert api_client.post("/api/v1/scans/batch", batch, format="multipart").status_code == 503

    assert value(scrape(), "eco2_scans_refused_total", reason="backlog") == before + 5


@pytest.mark.skipif(SERVICES_MODE, reason="counts the embedded broker's message files")
@pytest.mark.django_db
def test_filesystem_queue_depth_counts_message_files(token, settings, tmp_path):
    settings.CELERY_BROKER_URL = "filesystem://localhost//"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(tmp_path)}
    for index, queue in enumerate(["scan.ai.pipeline"] * 3 + ["notification"]):
        (tmp_path / f"{1000 + index}_{index:032x}.{queue}.msg").write_bytes(b"{}")
    (tmp_path / "unrelated.txt").write_bytes(b"")

    text = scrape()

    assert value(text, "eco2_queue_depth", queue="scan.ai.pipeline") == 3
    assert value(text, "eco2_queue_depth", queue="notification") == 1
    assert value(text, "eco2_queue_depth", queue="default") == 0
    assert value(text, "eco2_queue_depth", queue="scan.ai.dlq") is None, "no DLQ on this broker"


@pytest.mark.django_db
def test_a_broken_part_is_left_out_and_the_rest_is_served(token, settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    started = time.monotonic()

    text = scrape()

    assert time.monotonic() - started < 5
    assert value(text, "eco2_metrics_collector_up", part="queues") == 0
    assert value(text, "eco2_metrics_collector_up", part="scans") == 1
    assert "eco2_queue_depth" not in text
    assert value(text, "eco2_scans", status="queued") == 0


# --- task metrics from a real prefork worker ------------------------------------------------
def upload(client, photo, hint: str) -> str:
    response = client.post("/api/v1/scans", {"image": photo(), "hint": hint}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def scrape_until(predicate, timeout: float = 10.0) -> str:
    """Task signals fire just after the scan row turns terminal: poll for them."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape()
        if predicate(text):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"metrics never matched; last scrape:\n{text[-3000:]}")
        time.sleep(0.2)


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_worker_task_metrics_reach_the_web_process(worker_manager, rulebase, token, user, photo):
    worker_manager.ensure()
    api = APIClient()
    api.force_authenticate(user)

    def succeeded(text):
        return value(
            text, "celery_task_total", status="succeeded", task_name="scans.tasks.vision_scan"
        )

    def failed(text):
        return value(
            text, "celery_task_total", status="failed", task_name="scans.tasks.vision_scan"
        )

    before = scrape()
    scan = wait_for_scan(upload(api, photo, "투명 페트병, 라벨 있음"))
    assert scan.status == ScanStatus.COMPLETED
    # counted by the worker in the transaction that completed the scan
    ended = value(scrape(), "eco2_scans_ended_total", status="completed")
    assert ended == (value(before, "eco2_scans_ended_total", status="completed") or 0) + 1

    text = scrape_until(
        lambda t: (
            (succeeded(t) or 0) > (succeeded(before) or 0)
            and (
                value(t, "celery_task_latency_seconds_count", task_name="scans.tasks.answer_gen")
                or 0
            )
            >= 1
        )
    )
    assert succeeded(text) >= 1
    assert value(text, "celery_task_latency_seconds_count", task_name="scans.tasks.answer_gen") >= 1
    assert (
        value(
            text,
            "celery_task_latency_seconds_bucket",
            task_name="scans.tasks.answer_gen",
            le="+Inf",
        )
        >= 1
    )

    crashed = wait_for_scan(upload(api, photo, f"{CRASH_HINT} 페트병"))
    assert crashed.status == ScanStatus.FAILED
    text = scrape_until(lambda t: (failed(t) or 0) > (failed(before) or 0))
    assert failed(text) >= 1
    assert (
        value(text, "eco2_scans_ended_total", status="failed")
        == (value(before, "eco2_scans_ended_total", status="failed") or 0) + 1
    )
    assert value(text, "eco2_dead_letters", state="pending") >= 1


# --- a worker that stops consuming ---------------------------------------------------------
WATCHED = {"WORKER_WATCH_INTERVAL": "0.5", "WORKER_STALL_SECONDS": "3"}


def worker_probe() -> tuple[int, str]:
    """docker/healthcheck.py worker, the compose file's worker health check, on this host."""
    done = subprocess.run(
        [sys.executable, str(BASE_DIR / "docker" / "healthcheck.py"), "worker"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout + done.stderr


def worker_name(worker) -> str:
    return next(
        word for word in worker.log().split() if word.startswith("test-") and "@" in word
    ).rstrip(".")


def stalled_metric(worker) -> float | None:
    return value(scrape(), "eco2_worker_stalled", worker=worker_name(worker))


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout} s")
        time.sleep(0.25)
    return result


def signal_pool(worker, signum) -> None:
    from tests.support.processes import descendants

    for pid in descendants(worker.process.pid):
        os.kill(pid, signum)


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_worker_that_stops_consuming_with_work_queued_is_flagged(
    worker_manager, rulebase, token, user, photo
):
    """Its pool makes no progress (here: its processes stopped, as a deadlocked pool does not
    run them) while it holds scans: the probe the compose file uses fails and the metric says
    so, although the process runs and is connected. Then a frozen main process."""
    import signal

    worker = worker_manager.ensure(**WATCHED)
    assert worker_probe()[0] == 0
    signal_pool(worker, signal.SIGSTOP)
    try:
        ids = [services.create_scan(owner=user, image=photo(), hint="캔").id for _ in range(3)]

        _, output = wait_until(
            lambda: (probe := worker_probe())[0] == 1 and probe, 20, "the probe fails"
        )
        assert "stalled worker" in output and "no task started or finished" in output, output
        assert stalled_metric(worker) == 1
    finally:
        signal_pool(worker, signal.SIGCONT)

    for scan_id in ids:
        assert wait_for_scan(scan_id).status == ScanStatus.COMPLETED
    wait_until(lambda: worker_probe()[0] == 0, 10, "the probe passes again")
    assert stalled_metric(worker) == 0

    os.kill(worker.process.pid, signal.SIGSTOP)  # frozen: not even its watch runs
    try:
        _, output = wait_until(
            lambda: (probe := worker_probe())[0] == 1 and probe, 20, "the probe fails"
        )
        assert "has not reported" in output, output
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_healthy_idle_worker_and_a_busy_progressing_one_are_not_flagged(
    worker_manager, rulebase, token, user, photo
):
    worker = worker_manager.ensure(FAKE_VISION_DELAY_SECONDS="0.6", **WATCHED)
    # a fresh process's first scan loads the matcher's index and embeddings: seconds of one
    # task that this test's 3 s window (production: 180 s) would rightly call no progress
    wait_for_scan(services.create_scan(owner=user, image=photo(), hint="캔").id)
    ids = [services.create_scan(owner=user, image=photo(), hint="캔").id for _ in range(8)]
    probes = []
    while Scan.objects.filter(pk__in=ids, status__in=("queued", "processing")).exists():
        probes.append(worker_probe())  # busy for ~3 s beyond the 3 s window: steps go on
        assert stalled_metric(worker) == 0
    assert [code for code, _ in probes] == [0] * len(probes), probes
    assert len(probes) >= 3

    time.sleep(4)  # idle for longer than the window
    assert worker_probe() == (0, "ok\n")
    assert stalled_metric(worker) == 0


def test_the_per_host_exporter_serves_the_multiprocess_directory():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "eco2.metrics", "--port", str(port), "--addr", "127.0.0.1"],
        cwd=BASE_DIR,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
    finally:
        stop(process)


def test_stale_files_are_wiped_only_when_no_owner_is_alive(tmp_path):
    dead_pid = 2**22 + 12345  # above pid_max's usual range: not a live process
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"x")
    (tmp_path / f"gauge_livesum_{dead_pid}.db").write_bytes(b"x")
    assert wipe_if_first(tmp_path) is True
    assert not list(tmp_path.iterdir())

    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"x")
    (tmp_path / f"histogram_{os.getppid()}.db").write_bytes(
        b"x"
    )  # a live process (pytest's parent)
    assert wipe_if_first(tmp_path) is False
    assert len(list(tmp_path.iterdir())) == 2


# --- /healthz and /readyz -------------------------------------------------------------------
def test_healthz_answers_without_the_database():
    # no django_db mark: any database access here would raise
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_healthz_makes_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert Client().get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_ok_when_everything_answers():
    response = Client().get("/readyz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok"
    assert body["checks"]["redis"] == ("ok" if SERVICES_MODE else "skipped")


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_it_is_down(settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    started = time.monotonic()

    response = Client().get("/readyz")

    assert time.monotonic() - started < 3
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["broker"].startswith("error: ")
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_times_out_a_hanging_check(settings, monkeypatch):
    settings.HEALTH_CHECK_TIMEOUT = 0.2
    monkeypatch.setitem(health.CHECKS, "redis", lambda timeout: time.sleep(2))
    started = time.monotonic()

    response = Client().get("/readyz")

    assert time.monotonic() - started < 1.5
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == "error: timed out after 0.2s"


# --- Flower ---------------------------------------------------------------------------------
def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            pytest.fail(f"the process exited with {process.returncode}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.2)


def flower_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "eco2", "flower",
        f"--port={port}", "--address=127.0.0.1",
    ]  # fmt: skip


def get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_flower_runs_behind_basic_auth(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        flower_command(port),
        cwd=BASE_DIR,
        env=subprocess_env(FLOWER_BASIC_AUTH="ops:secret"),
        stdout=(tmp_path / "flower.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        assert get(f"http://127.0.0.1:{port}/") == 401
        assert get(f"http://127.0.0.1:{port}/", auth="ops:wrong") == 401
        assert get(f"http://127.0.0.1:{port}/", auth="ops:secret") == 200
    finally:
        stop(process)


def test_flower_refuses_to_start_without_basic_auth():
    env = subprocess_env()
    env.pop("FLOWER_BASIC_AUTH", None)
    result = subprocess.run(
        flower_command(free_port()),
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH is not set" in result.stderr


def test_flowerconfig_reads_users_and_prefix(monkeypatch):
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:secret, admin:other")
    monkeypatch.setenv("FLOWER_URL_PREFIX", "/flower/")
    config: dict = {}
    exec(Path(BASE_DIR, "flowerconfig.py").read_text(), config)
    assert config["basic_auth"] == ["ops:secret", "admin:other"]
    assert config["url_prefix"] == "flower"
    assert (config["persistent"], config["max_tasks"]) == (False, 10000)

    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops")
    with pytest.raises(SystemExit, match="user:password"):
        exec(Path(BASE_DIR, "flowerconfig.py").read_text(), {})
