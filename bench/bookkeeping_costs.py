"""Bookkeeping cost per scan: PostgreSQL transactions and row writes, intake vs worker side.

N scans through real workers (prefork scan.image, threads scan.ai.pipeline with a pool, as
bench/pipeline_overhead.py) with zero-latency fake providers; pg_stat_database and
pg_stat_user_tables deltas, read until stable (a backend's stats reach the shared view up to
~10 s after it went idle).

  DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> CELERY_BROKER_URL=... REDIS_URL=...
  .venv/bin/python bench/bookkeeping_costs.py -n 30

The figures of docs/benchmarks.md, "Lean pipeline (issue 22): bookkeeping". ECO2_ROOT names
another checkout to measure (its workers run its code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = os.environ.get("ECO2_ROOT", str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, ROOT)
os.chdir(ROOT)

from bench import common  # noqa: E402

HINT = "투명 페트병, 라벨 있음"
CLK = os.sysconf("SC_CLK_TCK")


def pg_params():
    return common._pg_params(os.environ["DATABASE_URL"])


def db_level(conn, name):
    row = conn.execute(
        "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted"
        " FROM pg_stat_database WHERE datname = %s",
        (name,),
    ).fetchone()
    return (int(row[0]), int(row[1]))


def stable(conn, name, quiet=11.0, poll=0.5):
    last, since = db_level(conn, name), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(poll)
        now = db_level(conn, name)
        if now != last:
            last, since = now, time.monotonic()
    return last


def per_table(name):
    import psycopg

    params = pg_params()
    params.pop("dbname")
    with psycopg.connect(**params, dbname=name, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables"
        ).fetchall()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def table_delta(before, after):
    out = {}
    for name, (i, u, d, h) in after.items():
        bi, bu, bd, bh = before.get(name, (0, 0, 0, 0))
        if (i - bi, u - bu, d - bd) != (0, 0, 0):
            out[name] = (i - bi, u - bu, d - bd, h - bh)
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def create_scans(count, label):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection, transaction

    from scans.services import create_scan

    owner = common.bench_user(label)
    nonce = uuid.uuid4().hex
    photos = [common.photo(f"{nonce}-{i}") for i in range(count)]
    ids = []
    with transaction.atomic():
        for i, data in enumerate(photos):
            upload = SimpleUploadedFile(f"m-{i}.jpg", data, content_type="image/jpeg")
            ids.append(str(create_scan(owner=owner, image=upload, hint=HINT).id))
    connection.close()
    return ids


def wait_terminal_redis(ids, timeout):
    from scans.models import TERMINAL_STATUSES
    from scans.progress import read_progress

    deadline = time.monotonic() + timeout
    left = set(ids)
    while left and time.monotonic() < deadline:
        for scan_id in list(left):
            state = read_progress(scan_id)
            if state and state["status"] in TERMINAL_STATUSES:
                left.discard(scan_id)
        time.sleep(0.2)
    return not left


def consumers(app, add: bool):
    for queue in (common.IMAGE_QUEUE, common.AI_QUEUE):
        if add:
            app.control.add_consumer(queue, reply=True)
        else:
            app.control.cancel_consumer(queue, reply=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--count", type=int, default=30)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--image-concurrency", type=int, default=2)
    parser.add_argument("--quiet", type=float, default=11.0)
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="lean-measure-")
    env = common.bench_env(False, var_dir)
    common.prepare_database(env)
    common.setup_django(env)
    common.load_rules()
    import psycopg
    from django.db import connection

    from eco2.celery import app

    name = pg_params()["dbname"]
    worker_env = {
        **env,
        "SCAN_VISION_PROVIDER": "bench.providers.ZeroLatencyVisionProvider",
        "SCAN_ANSWER_PROVIDER": "bench.providers.ZeroLatencyAnswerProvider",
    }
    ai_env = {**worker_env, "DB_POOL_MAX_SIZE": str(min(args.concurrency, 16))}
    image = common.image_worker(concurrency=args.image_concurrency, env=worker_env, log_dir=var_dir)
    ai = common.ai_worker(pool=args.pool, concurrency=args.concurrency, env=ai_env, log_dir=var_dir)
    params = pg_params()
    params.pop("dbname")
    stats = psycopg.connect(**params, dbname="postgres", autocommit=True)
    ok = True
    try:
        common.start_workers(image, ai)
        common.purge_queues()
        warm = create_scans(3, "lean-warm")
        wait_terminal_redis(warm, 60)
        consumers(app, add=False)
        connection.close()
        # idle: what the workers write on their own
        d0 = stable(stats, name, args.quiet)
        idle_started = time.monotonic()
        time.sleep(5)
        d_idle = stable(stats, name, args.quiet)
        idle_seconds = time.monotonic() - idle_started
        t0 = per_table(name)  # one transaction of ours, in the intake phase (subtracted)
        # intake: the scans are created, their first task published; nobody consumes
        ids = create_scans(args.count, "lean-measure")
        d1 = stable(stats, name, args.quiet)
        t1 = per_table(name)  # one transaction of ours, in the worker phase (subtracted)
        pids = image.pids() + ai.pids()
        cpu0 = cpu_seconds(pids)
        consumers(app, add=True)
        ok = wait_terminal_redis(ids, 300)
        cpu1 = cpu_seconds(image.pids() + ai.pids())
        d2 = stable(stats, name, args.quiet)
        t2 = per_table(name)
        from scans.models import Scan

        outcomes = {}
        for status in Scan.objects.filter(pk__in=ids).values_list("status", flat=True):
            outcomes[status] = outcomes.get(status, 0) + 1
        connection.close()
    finally:
        consumers(app, add=True)
        common.stop_workers(image, ai)
        stats.close()

    n = args.count
    idle_tx = d_idle[0] - d0[0]
    intake_tx, intake_w = d1[0] - d_idle[0] - 1, d1[1] - d_idle[1]
    worker_tx, worker_w = d2[0] - d1[0] - 1, d2[1] - d1[1]
    print(f"scans: {n} {outcomes} ended={ok}; idle {idle_seconds:.0f} s: {idle_tx} tx")
    print(f"intake : {intake_tx / n:6.2f} tx/scan  {intake_w / n:6.2f} row writes/scan")
    print(f"workers: {worker_tx / n:6.2f} tx/scan  {worker_w / n:6.2f} row writes/scan")
    print(f"worker CPU: {(cpu1 - cpu0) / n * 1000:.1f} ms/scan")
    intake_t, worker_t = table_delta(t0, t1), table_delta(t1, t2)
    user_rows = sum(sum(v[:3]) for v in worker_t.values()) / n
    print(f"workers: {user_rows:6.2f} row writes/scan in the app's tables (pg_stat_user_tables)")
    # HOT: updates PostgreSQL made in place, without a new entry in every index of the table
    print("per table (ins/upd/del per scan, HOT of the updates) — intake | workers:")
    for table in sorted(set(intake_t) | set(worker_t)):
        a = intake_t.get(table, (0, 0, 0, 0))
        b = worker_t.get(table, (0, 0, 0, 0))
        print(
            f"  {table:<40} {a[0] / n:4.2f}/{a[1] / n:4.2f}/{a[2] / n:4.2f} HOT {a[3] / n:4.2f}"
            f"  |  {b[0] / n:4.2f}/{b[1] / n:4.2f}/{b[2] / n:4.2f} HOT {b[3] / n:4.2f}"
        )
    print(
        json.dumps(
            {
                "worker_tx": worker_tx / n,
                "worker_writes": worker_w / n,
                "intake_tx": intake_tx / n,
                "intake_writes": intake_w / n,
                "cpu_ms": (cpu1 - cpu0) / n * 1000,
            }
        )
    )
    print("logs:", var_dir)


if __name__ == "__main__":
    main()
