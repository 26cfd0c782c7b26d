from __future__ import annotations

import contextlib
import copy
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.test import APIClient

from scans.models import TERMINAL_STATUSES, Scan
from scans.rules import load_rulebase, read_rulebase
from scans.rules.cache import RULEBASE_MODELS, one_revision
from tests.support.embeddings import embed_aliases_once
from tests.support.processes import descendants

from .environment import TEST_VAR_DIR
from .factories import UserFactory

BASE_DIR = Path(settings.BASE_DIR)
SERVICES_MODE = os.environ.get("ECO2_TEST_SERVICES") == "1"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# --- the real-services pass -----------------------------------------------------------------
def _unreachable_services() -> list[str]:
    """Names of the real services this pass needs that do not answer."""
    import psycopg
    import redis
    from kombu import Connection

    problems = []
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        problems.append("DATABASE_URL is not PostgreSQL")
    else:
        try:
            psycopg.connect(
                host=db["HOST"],
                port=db["PORT"] or 5432,
                user=db["USER"],
                dbname=db["NAME"],
                connect_timeout=3,
            ).close()
        except psycopg.Error as exc:
            problems.append(f"PostgreSQL ({exc.__class__.__name__})")
    if not settings.CELERY_BROKER_URL.startswith("amqp"):
        problems.append("CELERY_BROKER_URL is not RabbitMQ")
    else:
        try:
            with Connection(settings.CELERY_BROKER_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            problems.append(f"RabbitMQ ({exc.__class__.__name__})")
    if not settings.REDIS_URL:
        problems.append("REDIS_URL is not set")
    else:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis ({exc.__class__.__name__})")
    return problems


def pytest_sessionstart(session):
    embed_aliases_once()
    if not SERVICES_MODE:
        return
    problems = _unreachable_services()
    if problems:
        message = "real-services pass: not reachable: " + ", ".join(problems)
        if IN_CI:
            pytest.exit(message + " (CI requires them)", returncode=1)
        pytest.exit(message + " — skipped locally; start them or run in CI", returncode=0)


def pytest_collection_modifyitems(config, items):
    """The real-services pass runs what services can change; text-only tests (the matcher on
    hints and the rule base) ran in the embedded pass and would only repeat it, ~4 min of CI."""
    if not SERVICES_MODE:
        return
    skip = pytest.mark.skip(reason="text only (hints and the rule base): the embedded pass runs it")
    for item in items:
        if item.get_closest_marker("text_only"):
            item.add_marker(skip)


def pytest_report_header(config):
    mode = "real services" if SERVICES_MODE else "embedded defaults"
    return [
        f"eco2: {mode}: db={settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} "
        f"broker={settings.CELERY_BROKER_URL.split(':', 1)[0]} redis={'yes' if settings.REDIS_URL else 'no'}"
    ]


# --- database -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    # The worker subprocess must open the same test database: SQLite has to be a file.
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(Path(TEST_VAR_DIR) / "test-db.sqlite3")


def database_url_for_subprocess() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="session")
def rulebase_data():
    return read_rulebase()


@pytest.fixture
def rulebase(db, rulebase_data, request):
    """The shipped rule base in the test database (text-only modules share one load)."""
    module = request.node.getparent(pytest.Module)
    if module is None or not module.stash.get(SHARED_RULEBASE, False):
        load_rulebase(copy.deepcopy(rulebase_data))


SHARED_RULEBASE = pytest.StashKey[bool]()


@pytest.fixture(scope="module", autouse=True)
def _text_only_module_rulebase(request):
    """A text-only module (``text_only``: the matcher reading hints) shares one load of the
    rule base between its tests. A load gives the rule base a new revision, and a process
    rebuilds its matcher index for each new revision (~1.5 s, Kiwi over every alias), which a
    load per test paid ~200 times. Committed before the first test's transaction (each test's
    own changes still roll back with it), removed after the module's last test, so the next
    module finds the empty rule base it would find otherwise."""
    if SERVICES_MODE or not request.node.get_closest_marker("text_only"):
        yield
        return
    request.getfixturevalue("django_db_setup")
    blocker = request.getfixturevalue("django_db_blocker")
    with blocker.unblock():
        load_rulebase(copy.deepcopy(request.getfixturevalue("rulebase_data")))
    request.node.stash[SHARED_RULEBASE] = True
    yield
    with blocker.unblock(), one_revision():
        for model in reversed(RULEBASE_MODELS):  # dependents first
            model.objects.all().delete()


# --- users and clients ----------------------------------------------------------------------
@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def api_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon_client():
    return APIClient()


# --- photos ---------------------------------------------------------------------------------
def make_photo_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (64, 48), color=(30, 140, 80)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def backlog_limit(settings, monkeypatch):
    """Set SCAN_BACKLOG_LIMIT; every upload then counts the waiting scans afresh (no 1 s reuse)."""
    from scans.services import intake

    def set_limit(limit: int) -> None:
        settings.SCAN_BACKLOG_LIMIT = limit
        monkeypatch.setattr(intake, "BACKLOG_READ_EVERY", 0.0)

    return set_limit


@pytest.fixture
def photo():
    def build(name: str = "bottle.jpg", fmt: str = "JPEG", **kwargs) -> SimpleUploadedFile:
        content_type = {
            "JPEG": "image/jpeg",
            "PNG": "image/png",
            "WEBP": "image/webp",
            "GIF": "image/gif",
        }[fmt]
        return SimpleUploadedFile(name, make_photo_bytes(fmt, **kwargs), content_type=content_type)

    return build


# --- a real Celery worker -------------------------------------------------------------------
class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _purge_pipeline_queues() -> None:
    """Drop messages left on a shared broker by an earlier, interrupted run."""
    from eco2.celery import app
    from scans.broker import DEAD_LETTER_QUEUE

    with app.connection_for_write() as conn:
        for queue in (*app.conf.task_queues, DEAD_LETTER_QUEUE):
            bound = queue(conn.default_channel)
            bound.declare()
            bound.purge()


def _wait_for_no_consumers(timeout: float = 10.0) -> None:
    from eco2.celery import app

    deadline = time.monotonic() + timeout
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while time.monotonic() < deadline and any(
            queue(channel).queue_declare(passive=True).consumer_count
            for queue in app.conf.task_queues
        ):
            time.sleep(0.05)


def subprocess_env(**overrides: str) -> dict[str, str]:
    """The environment of a worker or beat subprocess: this test run's database and folders."""
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "ECO2_VAR_DIR": TEST_VAR_DIR,
        "PYTHONPATH": str(BASE_DIR),
        **overrides,
    }


class WorkerManager:
    """Runs one ``celery worker`` subprocess at a time, restarted when the configuration changes.

    Two workers on the same queues would take each other's tasks, so tests that need another
    provider (the fake OpenAI server) ask for a different configuration instead.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.current: WorkerProcess | None = None
        self.config: tuple = ()
        self.starts = 0

    def ensure(self, concurrency: int = 2, pool: str = "prefork", **env: str) -> WorkerProcess:
        config = (concurrency, pool, *sorted(env.items()))
        if self.current and self.config == config and self.current.process.poll() is None:
            return self.current
        self.stop()
        self.current, self.config = self._start(env, concurrency, pool), config
        return self.current

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once: no shutdown, no acks."""
        if self.current is not None:
            for pid in [self.current.process.pid, *descendants(self.current.process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.current.process.wait()
            self.current = None

    def _start(self, overrides: dict[str, str], concurrency: int, pool: str) -> WorkerProcess:
        self.starts += 1
        log_path = self.log_dir / f"worker-{self.starts}.log"
        defaults = {
            "SCAN_VISION_PROVIDER": "tests.fakes.providers.FailingOnRequestVisionProvider",
            "SCAN_RETRY_BACKOFF_CAP": "2",  # real backoff, in seconds a test can wait for
        }
        env = subprocess_env(**{**defaults, **overrides})
        command = [
            sys.executable, "-m", "celery", "-A", "eco2", "worker",
            "--loglevel=INFO", f"--pool={pool}", f"--concurrency={concurrency}",
            "--queues=scan.image,scan.ai.pipeline,notification,default",
            f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        with log_path.open("w") as log:
            process = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        worker = WorkerProcess(process, log_path)
        deadline = time.monotonic() + 60
        while " ready." not in worker.log():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the Celery worker did not start:\n{worker.log()[-4000:]}")
            time.sleep(0.2)
        return worker

    def stop(self) -> None:
        if self.current is None:
            return
        process = self.current.process
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.current = None


_session_workers: WorkerManager | None = None  # for the failure report below


@pytest.fixture(scope="session")
def worker_manager(django_db_setup, django_db_blocker, tmp_path_factory):
    if SERVICES_MODE:
        _purge_pipeline_queues()
    global _session_workers
    manager = _session_workers = WorkerManager(tmp_path_factory.mktemp("workers"))
    yield manager
    _session_workers = None
    manager.stop()


SET_UP = pytest.StashKey[bool]()  # the test's fixtures were all set up (not skipped, no error)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran a worker shows the end of the worker's log: a flake in CI
    then says what the worker did, not only which scan never finished."""
    report = yield
    if report.when == "setup":
        item.stash[SET_UP] = report.passed
    worker = _session_workers.current if _session_workers else None
    if report.failed and worker is not None and "worker_manager" in item.fixturenames:
        tail = "\n".join(worker.log().splitlines()[-60:])
        report.sections.append((f"worker log ({worker.log_path})", tail))
    return report


# How long a test's teardown waits for the worker to finish that test's scans and e-mails.
SETTLE_SECONDS = 15.0


def _uses_transactional_db(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction"))
    return (
        transactional
        or "transactional_db" in item.fixturenames
        or "live_server" in item.fixturenames
    )


def _work_in_flight() -> bool:
    """A dispatched scan or an e-mail the worker may still be writing to the database."""
    from notifications.models import Notification, NotificationStatus
    from scans.services import ACTIVE_STATUSES

    return (
        Scan.objects.filter(status__in=ACTIVE_STATUSES, dispatched_at__isnull=False).exists()
        or Notification.objects.filter(
            status__in=(NotificationStatus.PENDING, NotificationStatus.SENDING)
        ).exists()
    )


def settle_worker(manager: WorkerManager, timeout: float = SETTLE_SECONDS) -> str | None:
    """Let the worker finish the test's work before the database is emptied.

    Between transactional tests pytest-django empties every table (TRUNCATE on PostgreSQL).
    A worker still running a step of the test's scan would hold its locks in the middle of
    that (a deadlock PostgreSQL resolves by failing one side) or write its rows after it, into
    the next test. Work that outlasts ``timeout`` (a scan a test leaves in a retry on purpose,
    a hung provider) ends with the worker: it is killed and its queues purged, and the next
    test that needs a worker starts a fresh one. Returns why it was killed, or None.
    """
    worker = manager.current
    if worker is None or worker.process.poll() is not None:
        return None
    deadline = time.monotonic() + timeout
    while _work_in_flight():
        if time.monotonic() > deadline:
            manager.kill()
            _wait_for_no_consumers()  # RabbitMQ requeues the killed worker's unacked messages
            _purge_pipeline_queues()
            return f"work still in flight after {timeout:g} s"
        time.sleep(0.05)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    # before the fixtures' teardown, so the test database is still there to be asked
    set_up = item.stash.get(SET_UP, False)
    if set_up and _uses_transactional_db(item):
        if _session_workers is not None:
            reason = settle_worker(_session_workers)
            if reason:  # in the warnings summary: a test that should wait for its own scans
                item.warn(pytest.PytestWarning(f"its worker was killed at teardown: {reason}"))
        # The test's rows are about to be emptied: a message it left on a queue (published with
        # no worker running, or for a scan it deleted) would reach the next test's worker and
        # be dead-lettered there as a message for an unknown scan.
        try:
            _purge_pipeline_queues()
        except Exception as exc:  # a chaos test may leave the broker still starting
            item.warn(pytest.PytestWarning(f"queues not purged at teardown: {exc!r}"))
    return (yield)


@pytest.fixture
def celery_worker(worker_manager):
    """A real ``celery worker`` subprocess on the configured broker and the test database,
    with the offline provider (plus hints that fail on purpose, see tests/fakes/providers.py)."""
    return worker_manager.ensure()


@pytest.fixture(scope="session")
def fake_openai_server():
    from .fakes.openai_server import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server):
    """The fake OpenAI-compatible server, with no scripts and no recorded requests."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture
def openai_worker(worker_manager, fake_openai):
    """A worker whose vision and answer steps use the OpenAI provider against the fake server."""
    return worker_manager.ensure(
        SCAN_VISION_PROVIDER="scans.providers.openai.OpenAIVisionProvider",
        SCAN_ANSWER_PROVIDER="scans.providers.openai.OpenAIAnswerProvider",
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_TIMEOUT="2",
    )


# --- object storage -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on loopback with one private bucket, for the run."""
    from .support.object_storage import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def s3_media(s3_server, settings, monkeypatch):
    """This process keeps photos in the bucket (MEDIA_STORAGE=s3); a worker does with
    ``worker_manager.ensure(**s3_media.env())``."""
    from .support.object_storage import CREDENTIALS, EXPIRE_SECONDS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings.MEDIA_STORAGE = "s3"
    settings.AWS_QUERYSTRING_EXPIRE = EXPIRE_SECONDS
    settings.STORAGES = {**settings.STORAGES, "default": s3_server.storage_setting()}
    return s3_server


def wait_for_scan(scan_id, timeout: float = 30.0) -> Scan:
    """Poll the row until the scan's run has ended (completed, failed, or needs_input: it asks
    which one it is); fail the test with its state otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        scan = Scan.objects.get(pk=scan_id)
        if scan.status in TERMINAL_STATUSES:
            return scan
        if time.monotonic() > deadline:
            attempts = "\n".join(
                f"  {a.started_at:%H:%M:%S.%f} {a.task_name} #{a.attempt} {a.outcome} "
                f"{a.exception_class} {a.exception_message[:200]}"
                for a in scan.attempts.all()
            )
            pytest.fail(
                f"scan {scan_id} still {scan.status}/{scan.step} after {timeout}s "
                f"(dispatched_at={scan.dispatched_at}); its attempts:\n{attempts or '  none'}"
            )
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's cost protects real passwords; in tests it only slows every login and factory
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
