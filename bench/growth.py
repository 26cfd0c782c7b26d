"""growth: what the requests that run all day cost with 10 k scans and with 1 M (issue 21 §5).

For each size the harness fills a database of its own with that many scans (their owners,
two task attempts and two task-history rows a scan, an event per ended scan), with SQL
(``INSERT … SELECT`` over ``generate_series``) into the real schema, indexes included, then
``VACUUM ANALYZE``; and times, in process (Django's test client, no HTTP server in between):

- ``status``: ``GET /api/v1/scans/<id>``;
- ``list_first`` / ``list_deep``: a user's list, first page and page 40 (a user has 1,000 scans
  at both sizes: the table grows with users, not one user's history);
- ``list_all_first`` / ``list_all_deep``: staff's ``?all=1`` over every scan, page 1 and 400;
- ``stream_poll``: one poll of an open event stream (scans/events.py: StateReader), from the
  Redis mirror when Redis is configured (the production profile), else the row;
- ``metrics``: a whole ``/metrics`` scrape;
- ``admin_*``: the admin's lists of scans, task history, attempts and events (first page).

Each figure is the median of ``--repeat`` requests after a warm-up; the table gives the ratio
largest/smallest size and PASS when it is at most ``--target`` (1.5).

    python bench/growth.py                       # 10,000 and 1,000,000 scans, PostgreSQL (~15 min)
    python bench/growth.py --sizes 10000,100000  # other sizes
    python bench/growth.py --smoke               # 200 and 2,000 scans on SQLite: checks the harness

The production profile uses its own database, ``eco2_growth`` (``GROWTH_DATABASE_URL``), whose
tables it empties at each size: never point it at a database whose rows matter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

GROWTH_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/eco2_growth"
ACTIVE_SCANS = 50  # queued and processing: the backlog, whatever the history
USER_SCANS = 1_000  # the scans of the user whose list is read
SCANS_PER_OWNER = 50  # the other users
TARGET = 1.5
ROUNDS = 4
METRICS_TOKEN = "growth-bench"


# --- filling the tables -------------------------------------------------------------------------
class Filler:
    """``INSERT … SELECT`` for one vendor: PostgreSQL (generate_series) or SQLite (a recursive
    CTE). Every column of the model is filled: from an expression given, else its default."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.pg = connection.vendor == "postgresql"

    def uuid(self, seed_sql: str) -> str:
        if self.pg:
            return f"md5({seed_sql})::uuid"
        return f"lower(hex(randomblob(16)))  /* {seed_sql} */"

    def ago(self, seconds_sql: str) -> str:
        """A timestamp ``seconds_sql`` seconds before now, as the column stores it."""
        if self.pg:
            return f"now() - ({seconds_sql}) * interval '1 second'"
        return f"strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || ({seconds_sql}) || ' seconds')"

    def text(self, sql: str) -> str:
        return f"CAST({sql} AS TEXT)"

    def columns(
        self, model, given: dict[str, str | None]
    ) -> tuple[list[str], list[str], list[Any]]:
        names, exprs, params = [], [], []
        for field in model._meta.concrete_fields:
            if field.attname in given and given[field.attname] is None:
                continue  # left to the column's own default (an auto-increment key)
            names.append(self.connection.ops.quote_name(field.column))
            if field.attname in given:
                exprs.append(str(given[field.attname]).replace("%", "%%"))  # params follow
            elif field.null and not field.has_default():
                exprs.append("NULL")
            else:
                exprs.append("%s")
                params.append(field.get_db_prep_save(field.get_default(), self.connection))
        return names, exprs, params

    def series(self, model, count: int, given: dict[str, str | None]) -> None:
        """``count`` rows, ``i`` = 1 … count in the expressions."""
        names, exprs, params = self.columns(model, given)
        table = self.connection.ops.quote_name(model._meta.db_table)
        select = f"SELECT {', '.join(exprs)}"
        if self.pg:
            sql = (
                f"INSERT INTO {table} ({', '.join(names)}) {select} "
                f"FROM generate_series(1, {int(count)}) AS g(i)"
            )
        else:
            sql = (
                f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
                f"WHERE i < {int(count)}) INSERT INTO {table} ({', '.join(names)}) {select} FROM g"
            )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)

    def from_query(self, model, source: str, given: dict[str, str | None]) -> None:
        """Rows made from ``source`` (a FROM clause and its conditions)."""
        names, exprs, params = self.columns(model, given)
        table = self.connection.ops.quote_name(model._meta.db_table)
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(exprs)} "
            f"FROM {source.replace('%', '%%')}"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)


def empty_tables() -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django_celery_results.models import TaskResult

    from scans.models import Scan, ScanEvent, ScanTotals, TaskAttempt

    models = (ScanEvent, TaskAttempt, TaskResult, Scan, ScanTotals)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            tables = ", ".join(m._meta.db_table for m in (*models, User))
            cursor.execute(f"TRUNCATE {tables} CASCADE")
        else:
            for model in models:
                cursor.execute(f"DELETE FROM {model._meta.db_table}")
            User.objects.all().delete()


def fill(size: int, user_scans: int) -> dict[str, Any]:
    """``size`` scans with their owners, attempts, task history and events; the user whose
    list is read and a staff user."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django_celery_results.models import TaskResult

    from scans.models import Scan, ScanEvent, TaskAttempt

    started = time.monotonic()
    empty_tables()
    filler = Filler(connection)
    reader = User.objects.create_user("growth-reader", password="x")
    staff = User.objects.create_superuser("growth-staff", password="x")
    owners = max(1, size // SCANS_PER_OWNER)
    filler.series(
        User,
        owners,
        {
            "id": f"{staff.pk} + i",
            "username": "'growth-' || " + filler.text("i"),
            "password": "'!'",
            "date_joined": filler.ago("i"),
        },
    )
    every = max(1, size // user_scans)  # one scan in ``every`` is the reader's
    year = 365 * 24 * 3600
    status = (
        f"CASE WHEN i <= {ACTIVE_SCANS} THEN (CASE WHEN i % 2 = 0 THEN 'queued' ELSE "
        "'processing' END) WHEN i % 100 < 4 THEN 'failed' WHEN i % 100 < 10 THEN 'needs_input' "
        "ELSE 'completed' END"
    )
    step = (
        f"CASE WHEN i <= {ACTIVE_SCANS} THEN (CASE WHEN i % 2 = 0 THEN 'queued' ELSE 'vision' "
        "END) WHEN i % 100 < 4 THEN 'answer' WHEN i % 100 < 10 THEN 'input' ELSE 'done' END"
    )
    created = filler.ago(f"i * {year / size:.6f}")
    json_cast = "::jsonb" if filler.pg else ""
    filler.series(
        Scan,
        size,
        {
            "id": filler.uuid("'scan-' || " + filler.text("i")),
            "owner_id": f"CASE WHEN i % {every} = 0 THEN {reader.pk} "
            f"ELSE {staff.pk} + 1 + i % {owners} END",
            "image": "'scans/2026/01/01/' || " + filler.text("i") + " || '.jpg'",
            "status": status,
            "step": step,
            "progress": f"CASE WHEN i <= {ACTIVE_SCANS} THEN 10 ELSE 100 END",
            "classification": '\'{"category_code": "pet_clear", "confidence": 0.93, '
            '"situation_tags": ["label_attached"], "minor_category": "생수병"}\'' + json_cast,
            "answer": '\'{"user_answer": "라벨을 떼고 내용물을 비운 뒤 투명 페트병으로 배출하세요.", '
            '"disposal_steps": ["라벨 제거", "헹구기", "압착"]}\'' + json_cast,
            "outcome": "'classified'",
            "provider": "'openai'",
            "input_tokens": "1200",
            "output_tokens": "180",
            "cost_usd": "0.0004500000",
            "created_at": created,
            "updated_at": created,
            "started_at": created,
            "finished_at": f"CASE WHEN i <= {ACTIVE_SCANS} THEN NULL ELSE {created} END",
            "dispatched_at": created,
        },
    )
    scan_id = filler.text("s.id")
    steps = "(SELECT 1 AS k, 'vision' AS step UNION ALL SELECT 2, 'answer') v"
    task_id = f"'t-' || {scan_id} || '-' || {filler.text('v.k')}"
    task_name = "CASE WHEN v.k = 1 THEN 'scans.tasks.vision_scan' ELSE 'scans.tasks.answer_gen' END"
    filler.from_query(
        TaskAttempt,
        f"{Scan._meta.db_table} s CROSS JOIN {steps}",
        {
            "id": None,
            "scan_id": "s.id",
            "task_id": task_id,
            "task_name": task_name,
            "step": "v.step",
            "attempt": "1",
            "worker": "'ai@growth'",
            "queue": "'scan.ai.pipeline'",
            "outcome": "'succeeded'",
            "started_at": "s.created_at",
            "finished_at": "s.created_at",
            "duration_ms": "1500",
        },
    )
    filler.from_query(
        TaskResult,
        f"{Scan._meta.db_table} s CROSS JOIN {steps}",
        {
            "id": None,
            "task_id": task_id,
            "task_name": task_name,
            "task_args": f"'[''' || {scan_id} || ''']'",
            "task_kwargs": "'{}'",
            "status": "'SUCCESS'",
            "worker": "'ai@growth'",
            "content_type": "'application/json'",
            "content_encoding": "'utf-8'",
            "result": "'\"succeeded\"'",
            "date_created": "s.created_at",
            "date_started": "s.created_at",
            "date_done": "s.created_at",
        },
    )
    event_type = (
        "CASE s.status WHEN 'completed' THEN 'ScanCompleted' WHEN 'failed' THEN 'ScanFailed' "
        "ELSE 'ScanNeedsInput' END"
    )
    filler.from_query(
        ScanEvent,
        f"{Scan._meta.db_table} s WHERE s.status IN ('completed', 'failed', 'needs_input')",
        {
            "id": filler.uuid("'event-' || " + scan_id),
            "type": event_type,
            "scan_id": "s.id",
            "payload": "'{}'" + json_cast,
            "occurred_at": "s.finished_at",
            "published_at": "s.finished_at",
        },
    )
    if filler.pg:
        # the id columns were filled explicitly: their sequences go on after the last one
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('auth_user', 'id'), "
                "(SELECT max(id) FROM auth_user))"
            )
    loaded = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if filler.pg else "ANALYZE")
    return {
        **loaded_data(),
        "load_s": round(loaded, 1),
        "vacuum_s": round(time.monotonic() - started - loaded, 1),
    }


def reused(size: int) -> dict[str, Any] | None:
    """The rows a previous run left, if it filled this database with ``size`` scans."""
    from django.contrib.auth.models import User

    from scans.models import Scan

    if not User.objects.filter(username="growth-reader").exists():
        return None
    if Scan.objects.count() != size:
        return None
    return {**loaded_data(), "load_s": 0.0, "vacuum_s": 0.0}


def loaded_data() -> dict[str, Any]:
    """What a size's database holds, and the rows the operations read."""
    from django.contrib.auth.models import User
    from django_celery_results.models import TaskResult

    from scans.models import Scan, ScanEvent, TaskAttempt

    reader = User.objects.get(username="growth-reader")
    counts = {
        "scans": Scan.objects.count(),
        "attempts": TaskAttempt.objects.count(),
        "task_results": TaskResult.objects.count(),
        "events": ScanEvent.objects.count(),
        "users": User.objects.count(),
    }
    active = (
        Scan.objects.filter(owner=reader, status="processing").first()
        or Scan.objects.filter(status="processing").first()
    )
    return {
        "counts": counts,
        "reader": reader,
        "staff": User.objects.get(username="growth-staff"),
        "scan": Scan.objects.filter(owner=reader).order_by("-created_at")[5],
        "active": active,
    }


# --- measuring ----------------------------------------------------------------------------------
def operations(data: dict[str, Any], pages: tuple[int, int]) -> dict[str, Any]:
    """The timed operations on one size's database (its clients logged in there), and the
    queries an open stream makes per poll."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from scans import events
    from scans.progress import mirror_progress

    reader, staff, anonymous = Client(), Client(), Client()
    reader.force_login(data["reader"])
    staff.force_login(data["staff"])

    def get(client: Client, url: str, **headers: Any) -> Callable[[], None]:
        def call() -> None:
            response = client.get(url, **headers)
            if response.status_code != 200:
                raise SystemExit(f"GET {url}: {response.status_code} {response.content[:300]!r}")

        return call

    active = str(data["active"].id)
    mirror_progress(active, status="processing", step="vision", progress=10, updated_at="")
    poll = events.StateReader(active)
    poll()  # the stream's opening read
    with CaptureQueriesContext(connection) as queries:
        for _ in range(10):
            poll()
    poll_queries = len(queries) / 10  # now: each request resets the connection's query log
    scans = "/api/v1/scans"
    metrics = {"HTTP_AUTHORIZATION": f"Bearer {METRICS_TOKEN}"}
    calls: dict[str, Callable[[], object]] = {
        "status": get(reader, f"{scans}/{data['scan'].id}"),
        "list_first": get(reader, scans),
        "list_deep": get(reader, f"{scans}?page={pages[0]}"),
        "list_all_first": get(staff, f"{scans}?all=1"),
        "list_all_deep": get(staff, f"{scans}?all=1&page={pages[1]}"),
        "stream_poll": poll,
        "stream_poll_db": lambda: events.read_state(active),  # no Redis: the row and attempts
        "metrics": get(anonymous, "/metrics", **metrics),
        "admin_scans": get(staff, "/admin/scans/scan/"),
        "admin_task_history": get(staff, "/admin/django_celery_results/taskresult/"),
        "admin_attempts": get(staff, "/admin/scans/taskattempt/"),
        "admin_events": get(staff, "/admin/scans/scanevent/"),
    }
    return {
        "calls": calls,
        "stream_poll_queries": poll_queries,
        "stream_poll_source": "redis" if settings.REDIS_URL else "database",
    }


def time_ms(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _database_name(url: str) -> str:
    import environ

    return str(environ.Env.db_url_config(url)["NAME"])


def use_database(name: str) -> None:
    """Point the default connection at one size's database (the next query reconnects)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = name


def report(runs: dict[int, dict[str, Any]], target: float) -> dict[str, Any]:
    sizes = sorted(runs)
    small, large = runs[sizes[0]]["ms"], runs[sizes[-1]]["ms"]
    header = f"{'operation':<20}" + "".join(f"{f'{s:,} ms':>14}" for s in sizes)
    print(f"\n{header}{'ratio':>8}  verdict (target ≤ {target}×)")
    verdicts = {}
    for name in small:
        ratio = large[name] / small[name] if small[name] else float("inf")
        verdicts[name] = {"ratio": round(ratio, 2), "pass": ratio <= target}
        cells = "".join(f"{runs[s]['ms'][name]:>14.2f}" for s in sizes)
        print(f"{name:<20}{cells}{ratio:>8.2f}  {'PASS' if ratio <= target else 'FAIL'}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="200 and 2,000 scans on SQLite")
    parser.add_argument("--sizes", default="", help="comma-separated scan counts")
    parser.add_argument("--repeat", type=int, default=0, help="requests timed per figure")
    parser.add_argument("--target", type=float, default=TARGET)
    parser.add_argument(
        "--reuse", action="store_true", help="measure the rows a previous run left, if complete"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] or (
        [200, 2_000] if args.smoke else [10_000, 1_000_000]
    )
    repeat = args.repeat or (5 if args.smoke else 40)

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-growth-")
    env = common.bench_env(args.smoke, var_dir)
    env["METRICS_TOKEN"] = METRICS_TOKEN
    env["DEBUG"] = "0"
    base = os.environ.get("GROWTH_DATABASE_URL", GROWTH_DATABASE_URL)
    urls = {  # a database per size, both kept: the rounds alternate between them
        size: f"sqlite:///{var_dir}/growth-{size}.sqlite3" if args.smoke else f"{base}_{size}"
        for size in sizes
    }
    for size in sizes:
        common.prepare_database({**env, "DATABASE_URL": urls[size]})
    common.setup_django({**env, "DATABASE_URL": urls[sizes[0]]})
    import logging

    from django.conf import settings
    from django.db import connection

    for name in ("axes", "django.request"):
        logging.getLogger(name).setLevel(logging.ERROR)  # a line per login otherwise
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # the deep pages are the same at every size: 4/5 into the reader's scans, and page 400 of
    # all scans (offset 7,980), or 4/5 into the smallest size's scans
    user_scans = min(USER_SCANS, sizes[0])
    pages = (max(1, user_scans * 4 // 5 // 20), max(1, min(400, sizes[0] * 4 // 5 // 20)))

    print(f"growth: {common.profile_name(args.smoke)}; database {connection.vendor}; sizes {sizes}")
    names = {size: _database_name(urls[size]) for size in sizes}
    runs: dict[int, dict[str, Any]] = {}
    ops: dict[int, dict[str, Any]] = {}
    for size in sizes:
        use_database(names[size])
        data = reused(size) if args.reuse else None
        data = data or fill(size, user_scans)
        print(
            f"  {size:,} scans: {data['counts']} loaded in {data['load_s']} s "
            f"(+ {data['vacuum_s']} s VACUUM ANALYZE)",
            flush=True,
        )
        ops[size] = operations(data, pages)
        runs[size] = {
            "counts": data["counts"],
            "load_s": data["load_s"],
            "stream_poll_queries": ops[size]["stream_poll_queries"],
            "stream_poll_source": ops[size]["stream_poll_source"],
        }
    # rounds that alternate between the sizes, so that the machine's drift (other processes,
    # caches) weighs on each size alike; the first call of each operation in a round is a
    # warm-up, not counted
    load_before = os.getloadavg()[0]
    samples: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
    per_round = max(1, repeat // ROUNDS)
    for index in range(ROUNDS):
        for size in sizes if index % 2 == 0 else reversed(sizes):
            use_database(names[size])
            for name, call in ops[size]["calls"].items():
                times = per_round * (5 if name.startswith("stream_poll") else 1)
                samples[size].setdefault(name, []).extend(time_ms(call, times + 1)[1:])
    for size in sizes:
        runs[size]["ms"] = {
            name: round(statistics.median(values), 3) for name, values in samples[size].items()
        }
    verdicts = report(runs, args.target)
    ok = all(v["pass"] for v in verdicts.values())
    failed = [name for name, verdict in verdicts.items() if not verdict["pass"]]
    print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS'} (target {args.target}×)")
    print(common.result_line({
        "smoke": args.smoke,
        "database": connection.vendor,
        "sizes": sizes,
        "pages": pages,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "runs": {str(size): run for size, run in runs.items()},
        "verdicts": verdicts,
        "pass": ok,
    }))  # fmt: skip
    common.finish(var_dir, smoke=args.smoke, ok=True)


if __name__ == "__main__":
    main()
