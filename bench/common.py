"""What the worker benchmarks share: the environment of a run, the database, Celery worker
subprocesses, queue purging, photos and process memory; the fake OpenAI model comes from
tests/fakes/model.py.

Used by every harness (api_latency.py takes the environment, the database and the queue
purge; it runs no worker). Nothing here is imported by the application.

Order matters in a harness: build the environment with :func:`bench_env`, make the database
ready with :func:`prepare_database` (a subprocess runs the migrations), then call
:func:`setup_django` before anything imports Django models or the Celery app.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the process helpers are the tests' own (tests/support/processes.py); bench may import them
from tests.support.processes import descendants  # noqa: E402

# The production profile; each one can be overridden from the environment.
SERVICES = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/eco2_bench",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
}
IMAGE_QUEUE = "scan.image"
AI_QUEUE = "scan.ai.pipeline"
RAW_QUEUE = "bench.raw"  # the raw-Celery anchor's (bench/raw_celery.py)


# --- the environment of a run -----------------------------------------------------------------
def bench_env(smoke: bool, var_dir: str) -> dict[str, str]:
    """The environment shared by the harness and its workers.

    Smoke runs use the embedded defaults (SQLite, filesystem broker, no Redis) in a fresh
    folder; full runs use PostgreSQL, RabbitMQ and Redis (SERVICES, each overridable).
    """
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "ECO2_VAR_DIR": var_dir,
        "PYTHONPATH": str(ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(Path(var_dir) / "prometheus"),
        # the runs create scans by the hundred for one user: the per-user cost guard
        # (SCAN_CREATE_RATE, enforced by create_scan) would refuse them; it is not what is measured
        "SCAN_CREATE_RATE": "",
    }
    for name in ("MEDIA_ROOT", "CELERY_BROKER_DIR"):
        env.pop(name, None)  # everything a run writes goes to var_dir
    if smoke:
        for name in SERVICES:
            env.pop(name, None)
    else:
        hold_services_lock()
        env.update({name: os.environ.get(name, value) for name, value in SERVICES.items()})
    return env


# Full runs share one database (eco2_bench) and one broker vhost: two at once take each other's
# tasks (the other run's workers cannot find this run's photos: "image_missing" failures) and
# each other's CPU. A run holds this lock until its process exits.
SERVICES_LOCK = Path(tempfile.gettempdir()) / "eco2-bench-services.lock"
_services_lock: Any = None


def hold_services_lock() -> None:
    """Take the full runs' lock for this process's life; exit with a message if another run
    holds it."""
    global _services_lock
    if _services_lock is not None:
        return
    handle = SERVICES_LOCK.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SystemExit(
            f"another benchmark is running on the shared services ({holder}): its workers "
            "would take this run's tasks. Wait for it, or run this one with --smoke."
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)}")
    handle.flush()
    _services_lock = handle


def profile_name(smoke: bool) -> str:
    if smoke:
        return "smoke (embedded defaults: SQLite, filesystem broker)"
    return "production profile (PostgreSQL, RabbitMQ, Redis)"


def _pg_params(url: str) -> dict[str, Any]:
    import environ

    config = environ.Env.db_url_config(url)
    return {
        "host": config.get("HOST") or "127.0.0.1",
        "port": config.get("PORT") or 5432,
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "dbname": config["NAME"],
    }


def prepare_database(env: dict[str, str]) -> None:
    """Create the PostgreSQL database if missing, then migrate."""
    url = env.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        import psycopg

        params = _pg_params(url)
        name = params.pop("dbname")
        with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def setup_django(env: dict[str, str]) -> None:
    """Configure this process like the workers (same settings module, database, broker)."""
    os.environ.clear()
    os.environ.update(env)
    import django

    django.setup()


def load_rules() -> None:
    """Load the rule base if the database has none (no embeddings: the OpenAI provider
    names the category code, so the text matcher is not used)."""
    from scans.models import Category
    from scans.rules import load_rulebase, read_rulebase

    if not Category.objects.exists():
        load_rulebase(read_rulebase())


def bench_user(label: str):
    """A fresh user per run and phase: its scans are exactly the ones counted."""
    from django.contrib.auth import get_user_model

    name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    return get_user_model().objects.create(username=name[:150])


def db_connection_budget() -> dict[str, int] | None:
    """PostgreSQL's max_connections and how many are in use now, or None (not PostgreSQL)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        maximum = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        used = int(cursor.fetchone()[0])
    return {"max_connections": maximum, "in_use": used}


# --- the broker -------------------------------------------------------------------------------
def purge_queues(names: Iterable[str] = (IMAGE_QUEUE, AI_QUEUE)) -> dict[str, int]:
    """Declare and empty the named queues of the app; returns how many messages each held."""
    from eco2.celery import app

    wanted = set(names)
    purged = {}
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            if queue.name in wanted:
                bound = queue(conn.default_channel)
                bound.declare()
                purged[queue.name] = bound.purge() or 0
    return purged


# --- workers ----------------------------------------------------------------------------------
def _proc_kb(path: str, field: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_mb(pids: Iterable[int]) -> dict[str, float]:
    """Sum of RSS (/proc/PID/status VmRSS) and of PSS (smaps_rollup) over ``pids``, in MB.

    RSS counts pages shared by forked pool children once per child; PSS splits them, so it
    is the fairer figure for prefork. Both are reported.
    """
    pids = list(pids)
    rss = sum(_proc_kb(f"/proc/{pid}/status", "VmRSS") for pid in pids)
    pss = sum(_proc_kb(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids)
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": len(pids)}


class Worker:
    """One ``celery worker`` subprocess on the given queues, pool and concurrency."""

    def __init__(
        self,
        name: str,
        *,
        queues: str,
        pool: str,
        concurrency: int,
        env: dict[str, str],
        log_dir: str,
        app: str = "eco2",
    ) -> None:
        self.name = name
        self.app = app
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self.env = env
        self.log_path = Path(log_dir) / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def describe(self) -> str:
        return f"{self.queues}: --pool={self.pool} --concurrency={self.concurrency}"

    def start(self) -> Worker:
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--loglevel=INFO", f"--pool={self.pool}", f"--concurrency={self.concurrency}",
            f"--queues={self.queues}", f"--hostname=bench-{self.name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *descendants(self.process.pid)]

    def memory(self) -> dict[str, float]:
        return memory_mb(self.pids())

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM: running tasks finish); wait_stopped() waits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 40.0) -> None:
        """Wait for the shutdown asked by terminate(); SIGKILL the lot if it hangs."""
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in [process.pid, *descendants(process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()

    def stop(self, timeout: float = 40.0) -> None:
        self.terminate()
        self.wait_stopped(timeout)


def image_worker(*, concurrency: int, env: dict[str, str], log_dir: str) -> Worker:
    """The image-preparation worker, on prefork as worker-default is in production."""
    return Worker(
        "image",
        queues=IMAGE_QUEUE,
        pool="prefork",
        concurrency=concurrency,
        env=env,
        log_dir=log_dir,
    )


def ai_worker(
    name: str = "ai", *, pool: str, concurrency: int, env: dict[str, str], log_dir: str
) -> Worker:
    """A worker on the AI queue (vision, rules, answer), as worker-ai is in production."""
    return Worker(
        name, queues=AI_QUEUE, pool=pool, concurrency=concurrency, env=env, log_dir=log_dir
    )


def raw_env(env: dict[str, str]) -> dict[str, str]:
    """The raw-Celery anchor's environment (bench/raw_celery.py): the run's broker, Redis and
    folder, without DJANGO_SETTINGS_MODULE (Celery's Django fixup would set Django up)."""
    return {name: value for name, value in env.items() if name != "DJANGO_SETTINGS_MODULE"}


def raw_worker(
    *, pool: str, concurrency: int, env: dict[str, str], log_dir: str, name: str = "raw"
) -> Worker:
    """The raw-Celery anchor's worker: plain Celery on its own queue, same pool and settings."""
    return Worker(
        name,
        queues=RAW_QUEUE,
        pool=pool,
        concurrency=concurrency,
        env=raw_env(env),
        log_dir=log_dir,
        app="bench.raw_celery",
    )


def run_raw(mode: str, env: dict[str, str], **options: float | int) -> dict[str, Any]:
    """Publish and time raw chains from a subprocess (bench/raw_celery.py): this process has
    the app's publish signals connected, which must not see them. Returns its JSON."""
    command = [sys.executable, "-m", "bench.raw_celery", mode]
    for option, value in options.items():
        command += [f"--{option.replace('_', '-')}", str(value)]
    done = subprocess.run(
        command, cwd=ROOT, env=raw_env(env), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"raw_celery {mode} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_workers(*workers: Worker) -> None:
    """Start side by side (startup is mostly imports), then wait for each to be ready."""
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.wait_ready()
    except Exception:
        for worker in workers:
            worker.stop()
        raise


def stop_workers(*workers: Worker) -> None:
    """Stop side by side. Only at the end of a run: on the filesystem broker (no acks) a worker
    still polling while it shuts down could take a message meant for a newly started one."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait_stopped()


def openai_env(base_url: str, timeout: float = 30.0) -> dict[str, str]:
    """The worker settings that point both steps at the fake OpenAI server (real client)."""
    return {
        "SCAN_VISION_PROVIDER": "scans.providers.openai.OpenAIVisionProvider",
        "SCAN_ANSWER_PROVIDER": "scans.providers.openai.OpenAIAnswerProvider",
        "OPENAI_API_KEY": "bench-key",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_TIMEOUT": f"{timeout:g}",
    }


# --- what a phase costs: CPU from /proc, transactions and row writes from PostgreSQL ---------
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int, *, reaped_children: bool = False) -> int:
    """utime + stime of ``pid`` (and cutime + cstime: its children that exited and were waited
    for), from /proc/PID/stat; 0 if it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # after the command: state is fields[0]; utime, stime, cutime, cstime are 14-17 of stat
        ticks = int(fields[11]) + int(fields[12])
        if reaped_children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks
    return 0


def process_tree_cpu(roots: Iterable[int]) -> float:
    """CPU seconds of each root, its live descendants, and the descendants it reaped."""
    ticks = 0
    for root in roots:
        ticks += _cpu_ticks(root, reaped_children=True)
        ticks += sum(_cpu_ticks(pid) for pid in descendants(root))
    return ticks / CLOCK_TICKS


def pg_url(env: dict[str, str]) -> str | None:
    url = env.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else None


def pg_counters(url: str) -> dict[str, Any]:
    """The bench database's transactions (pg_stat_database: commits + rollbacks) and row writes
    (pg_stat_user_tables: inserted + updated + deleted), in all and by table, read on a fresh
    connection that is closed again: its own read is the one transaction it adds to a later
    reading."""
    import psycopg

    with psycopg.connect(**_pg_params(url)) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        tables = {
            name: int(written)
            for name, written in conn.execute(
                "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
            ).fetchall()
        }
    assert row is not None
    return {"transactions": int(row[0]), "rows": sum(tables.values()), "tables": tables}


def rows_by_table(
    before: dict[str, int], after: dict[str, int], minus: dict[str, int] | None = None
) -> dict[str, int]:
    """The row writes of each table between two readings, less ``minus`` (the harness's own);
    the tables that wrote none are left out."""
    minus = minus or {}
    written = {
        name: count - before.get(name, 0) - minus.get(name, 0) for name, count in after.items()
    }
    return {name: count for name, count in sorted(written.items()) if count}


# PostgreSQL 15 reports a backend's counters at a transaction's end at most once a second, and
# an idle backend's within 10 s (PGSTAT_IDLE_INTERVAL): the end reading waits that long.
PG_STATS_SETTLE_S = 11.0


class CostMeter:
    """What a phase costs: CPU of the worker processes (from /proc, with the pool children they
    reaped) and of the bench database's PostgreSQL backends (pids from pg_stat_activity, read on
    a connection to the ``postgres`` database so the bench database sees no query of it; a
    backend that ends between two samples loses its last interval), and the database's
    transactions and row writes. Call sample() while the phase runs (backends come and go)."""

    def __init__(self, worker_roots: Iterable[int], url: str | None) -> None:
        self.roots = list(worker_roots)
        self.url = url
        self.backends: dict[int, list[int]] = {}  # pid → [ticks at first sight, latest ticks]
        self._conn: Any = None
        self._counters: dict[str, Any] = {}
        self._workers = 0.0
        self._clock = 0.0

    def _backend_pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self._dbname,),
        ).fetchall()
        return [pid for (pid,) in rows]

    def start(self) -> None:
        self.backends = {}
        if self.url:
            import psycopg
            from django.db import connections

            params = _pg_params(self.url)
            self._dbname = params.pop("dbname")
            self._conn = psycopg.connect(**params, dbname="postgres", autocommit=True)
            # What ran before (the warm-up, the previous phase) reaches the statistics up to
            # 10 s after its backends went idle: read before that, it was counted in this
            # phase (about a row and a transaction a scan more, issue 22's fourth round).
            connections.close_all()
            time.sleep(PG_STATS_SETTLE_S)
            self._counters = pg_counters(self.url)
            for pid in self._backend_pids():
                ticks = _cpu_ticks(pid)
                self.backends[pid] = [ticks, ticks]
        self._workers = process_tree_cpu(self.roots)
        self._clock = time.monotonic()

    def sample(self) -> None:
        if self._conn is None:
            return
        for pid in self._backend_pids():
            ticks = _cpu_ticks(pid)
            if pid not in self.backends:
                self.backends[pid] = [0, ticks]  # began during the phase: all of it counts
            elif ticks:
                self.backends[pid][1] = ticks

    def stop(self, *, harness: dict[str, Any] | None = None) -> dict[str, Any]:
        """The phase's cost. ``harness``: the transactions and rows this process wrote during the
        phase (counting_queries), taken out of the database's totals."""
        self.sample()
        workers = process_tree_cpu(self.roots) - self._workers
        seconds = time.monotonic() - self._clock
        figures: dict[str, Any] = {"seconds": seconds, "workers_cpu_s": workers}
        if self._conn is None:
            figures.update(postgres_cpu_s=None, transactions=None, rows=None)
            return figures
        postgres = sum(last - first for first, last in self.backends.values()) / CLOCK_TICKS
        from django.db import connections

        connections.close_all()  # a backend that ends reports its counters at once
        time.sleep(PG_STATS_SETTLE_S)
        after = pg_counters(self.url or "")
        self._conn.close()
        harness = harness or {"transactions": 0, "rows": 0}
        figures.update(
            postgres_cpu_s=postgres,
            # the first reading's own transaction is in the difference; the harness's are not
            # the workers'
            transactions=after["transactions"] - self._counters["transactions"] - 1,
            rows=after["rows"] - self._counters["rows"],
            harness_transactions=harness["transactions"],
            harness_rows=harness["rows"],
            # which facts the workers' rows are (issue 22: each table is a feature's record)
            worker_rows_by_table=rows_by_table(
                self._counters["tables"], after["tables"], harness.get("tables")
            ),
        )
        figures["worker_transactions"] = figures["transactions"] - harness["transactions"]
        figures["worker_rows"] = figures["rows"] - harness["rows"]
        return figures


class LockWaits:
    """How many of the bench database's sessions wait on a lock, sampled every ``interval``
    seconds on a thread of its own while a phase runs (pg_stat_activity, read from the
    ``postgres`` database): one hot row that every worker's transaction updates shows here as
    sessions queued behind each other, where CPU and scans/s only show "slower". Nothing
    without PostgreSQL."""

    def __init__(self, url: str | None, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0
        self._busy = 0
        self._waits: dict[str, int] = {}

    def start(self) -> None:
        if self.url:
            self._thread = threading.Thread(target=self._run, name="lock-waits", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        import psycopg

        params = _pg_params(self.url or "")
        dbname = params.pop("dbname")
        with psycopg.connect(**params, dbname="postgres", autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                rows = conn.execute(
                    "SELECT wait_event_type, left(query, 70) FROM pg_stat_activity"
                    " WHERE datname = %s AND state <> 'idle' AND pid <> pg_backend_pid()",
                    (dbname,),
                ).fetchall()
                self._samples += 1
                for wait_type, query in rows:
                    self._busy += 1
                    if wait_type == "Lock":
                        self._waits[query] = self._waits.get(query, 0) + 1

    def stop(self) -> dict[str, Any] | None:
        """Sessions busy and waiting on a lock, on average; the statement waited on most."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        samples = max(1, self._samples)
        top = max(self._waits, key=self._waits.__getitem__, default="")
        return {
            "samples": self._samples,
            "busy_sessions": self._busy / samples,
            "lock_waiting_sessions": sum(self._waits.values()) / samples,
            "most_waited": top,
        }


# the table of a write as Django's compilers spell it: INSERT INTO "t", UPDATE "t", DELETE FROM "t"
_WRITTEN_TABLE = re.compile(
    r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(?P<table>[\w.]+)"?', re.IGNORECASE
)


@contextlib.contextmanager
def counting_queries(counts: dict[str, Any] | None = None):
    """Count what this process sends on Django's default connection: transactions (a statement
    in autocommit, or an outermost atomic block's commit or rollback), statements, and rows
    written (the cursor's rowcount after INSERT, UPDATE and DELETE), in all and by table
    (``tables``). Yields the counts."""
    from django.db import connection

    counts = counts if counts is not None else {}
    for name in ("transactions", "statements", "rows"):
        counts.setdefault(name, 0)
    tables = counts.setdefault("tables", {})

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        counts["statements"] += 1
        if not connection.in_atomic_block and connection.get_autocommit():
            counts["transactions"] += 1
        written = _WRITTEN_TABLE.match(sql)
        if written:
            rows = max(0, context["cursor"].rowcount or 0)
            counts["rows"] += rows
            tables[written["table"]] = tables.get(written["table"], 0) + rows
        return result

    commit, rollback = connection.commit, connection.rollback

    def counted(method):
        def call() -> None:
            counts["transactions"] += 1
            method()

        return call

    connection.commit = counted(commit)  # type: ignore[method-assign]
    connection.rollback = counted(rollback)  # type: ignore[method-assign]
    try:
        with connection.execute_wrapper(wrapper):
            yield counts
    finally:
        del connection.commit, connection.rollback  # back to the class's methods


def percentile(values: list[float], q: int) -> float:
    """The ``q``th percentile (1–99) as api_latency.py computes them (statistics.quantiles)."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[q - 1]


# --- photos -----------------------------------------------------------------------------------
def photo(seed: int | str, size: tuple[int, int] = (320, 240)) -> bytes:
    """A distinct JPEG per seed: a colour gradient plus a block of noise, so every prepared
    photo hashes differently (no accidental vision-cache hits) yet stays small."""
    from PIL import Image

    rng = random.Random(seed)
    width, height = size
    base = [rng.randrange(256) for _ in range(3)]
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image = Image.blend(image, Image.new("RGB", size, tuple(base)), 0.6)
    side = max(8, min(width, height) // 8)
    noise = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    image.paste(noise, (rng.randrange(width - side + 1), rng.randrange(height - side + 1)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


# --- waiting for scans ------------------------------------------------------------------------
def wait_until_terminal(
    owner, total: int, timeout: float, poll: float = 0.2, on_poll: Callable[[], None] | None = None
) -> bool:
    """Wait until ``total`` scans of ``owner`` are completed or failed; False on timeout.
    ``on_poll`` runs at every poll (CostMeter.sample)."""
    from scans.models import TERMINAL_STATUSES, Scan

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = Scan.objects.filter(owner=owner, status__in=TERMINAL_STATUSES).count()
        if done >= total:
            return True
        if on_poll is not None:
            on_poll()
        time.sleep(poll)
    return False


def scan_outcomes(owner) -> dict[str, int]:
    from django.db.models import Count

    from scans.models import Scan

    rows = Scan.objects.filter(owner=owner).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def failure_samples(owner, limit: int = 3) -> list[str]:
    from scans.models import Scan, ScanStatus

    rows = Scan.objects.filter(owner=owner, status=ScanStatus.FAILED).values_list(
        "error_code", "error_message"
    )[:limit]
    return [f"{code}: {message}" for code, message in rows]


def finish(var_dir: str, *, smoke: bool, ok: bool, tail_lines: int = 25) -> None:
    """Remove a smoke run's folder when it went well; otherwise say where the logs are, and
    print the end of each worker log (CI keeps only the output, not the folder)."""
    if smoke and ok:
        shutil.rmtree(var_dir, ignore_errors=True)
        return
    print(f"  worker logs and uploads: {var_dir}")
    if ok:
        return
    for log in sorted(Path(var_dir).glob("worker-*.log")):
        lines = log.read_text(errors="replace").splitlines()
        print(f"  --- the last {min(tail_lines, len(lines))} of {len(lines)} lines of {log.name}")
        for line in lines[-tail_lines:]:
            print(f"    {line[:300]}")


def result_line(payload: dict) -> str:
    return "RESULT " + json.dumps(payload, ensure_ascii=False, default=str)
