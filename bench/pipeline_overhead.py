"""pipeline_overhead: scans through the app's real workers against raw Celery chains (issue 22).

Phases alternate in rounds (pipeline, raw, pipeline, raw …), all on one broker, with the same
pool, concurrency, late acks, prefetch 1 and result settings:

- pipeline: ``create_scan`` for N distinct photos in one transaction (their chains are
  published on commit), then the real chain prepare_image (scan.image) → vision_scan →
  rule_match → answer_gen (scan.ai.pipeline), with zero-latency fake providers answering inside
  the worker (bench/providers.py; ``--providers http``: the real ``openai`` client against the
  fake OpenAI server of tests/fakes);
- raw: N chains of three no-op tasks of plain Celery (bench/raw_celery.py: an app of its own,
  no Django, none of the app's hooks, no database; results in Redis), on a queue and worker of
  their own with the AI worker's pool and concurrency;
- one at a time: K scans, then K raw chains, each started when the previous one ended
  (latency p50/p99; the scans' per-hop latency from the attempt ledger, TaskAttempt);
- ``--hooked``: also the former baseline, no-op chains through the app's hooks
  (bench/noop_tasks.py).

Printed per round and as the median of the rounds: scans/s ÷ raw chains/s; CPU ms per scan and
per raw chain (the phase's worker processes from /proc, with the pool children they reaped;
the bench database's PostgreSQL backends by pid from pg_stat_activity; the intake: this
process's CPU while it creates and dispatches); worker-side transactions and row writes per
scan (pg_stat_database and pg_stat_user_tables deltas, minus what this process sent, counted on
its own connection); the intake's own per scan (the one-at-a-time scans, each created in
autocommit as an upload is). Targets (issue 22, this 2-core box): worker transactions ≤ 12 and
row writes ≤ 12 per scan, CPU ≤ 25 ms per scan, throughput ≥ 0.35 of raw Celery, one at a time
p50 ≤ 20 ms and p99 ≤ 40 ms. Smoke runs on SQLite: the PostgreSQL figures are n/a.

    python bench/pipeline_overhead.py            # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/pipeline_overhead.py --smoke    # tiny rounds, embedded defaults: checks the harness

Load generator, workers, database and broker share one machine: the figures are a floor, and
the ratios of one run are the meaningful numbers.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.fakes import model as fake_model  # noqa: E402

HINT = "투명 페트병, 라벨 있음"

# issue 22's targets on this 2-core box
TARGETS = {
    "worker_transactions_per_scan": ("≤", 12.0),
    "worker_rows_per_scan": ("≤", 12.0),
    "cpu_ms_per_scan": ("≤", 25.0),
    "ratio": ("≥", 0.35),
    "p50_ms": ("≤", 20.0),
    "p99_ms": ("≤", 40.0),
}


def per_item(cost: dict, count: int, intake_cpu_s: float = 0.0) -> dict:
    """A phase's cost per scan (or chain): CPU ms split by side, transactions, row writes."""
    count = max(1, count)
    figures: dict = {
        "workers_cpu_ms": cost["workers_cpu_s"] * 1000 / count,
        "intake_cpu_ms": intake_cpu_s * 1000 / count,
        "postgres_cpu_ms": None,
        "worker_transactions": None,
        "worker_rows": None,
    }
    if cost.get("postgres_cpu_s") is not None:
        figures.update(
            postgres_cpu_ms=cost["postgres_cpu_s"] * 1000 / count,
            worker_transactions=cost["worker_transactions"] / count,
            worker_rows=cost["worker_rows"] / count,
            harness_transactions=cost["harness_transactions"] / count,
            harness_rows=cost["harness_rows"] / count,
            worker_rows_by_table={
                table: rows / count for table, rows in cost["worker_rows_by_table"].items()
            },
        )
    figures["cpu_ms"] = (
        figures["workers_cpu_ms"] + figures["intake_cpu_ms"] + (figures["postgres_cpu_ms"] or 0.0)
    )
    return figures


def run_scans(
    count: int, *, label: str, size: tuple[int, int], timeout: float, meter: common.CostMeter
) -> dict:
    """Create ``count`` scans in one transaction; their chains are published on commit."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction
    from django.db.models import Count, Max

    from scans.models import TERMINAL_STATUSES, Scan
    from scans.services import create_scan

    owner = common.bench_user(label)
    nonce = uuid.uuid4().hex
    photos = [common.photo(f"{nonce}-{i}", size) for i in range(count)]
    started: list[float] = []
    harness: dict[str, int] = {}
    meter.start()
    with common.counting_queries(harness):
        cpu = time.process_time()
        with transaction.atomic():
            # on_commit callbacks run in order: this one, then each scan's dispatch_pipeline
            transaction.on_commit(lambda: started.append(time.time()))
            for i, data in enumerate(photos):
                upload = SimpleUploadedFile(f"bench-{i}.jpg", data, content_type="image/jpeg")
                create_scan(owner=owner, image=upload, hint=HINT)
        intake_cpu = time.process_time() - cpu
        enqueued = time.time()
        finished = common.wait_until_terminal(owner, count, timeout, on_poll=meter.sample)
        last = Scan.objects.filter(owner=owner).aggregate(last=Max("finished_at"))["last"]
    cost = meter.stop(harness=harness)
    outcomes = common.scan_outcomes(owner)
    end = last.timestamp() if (finished and last) else time.time()
    seconds = end - started[0]
    completed = outcomes.get("completed", 0)
    return {
        "count": count,
        "completed": completed,
        "failed": outcomes.get("failed", 0),
        "timed_out": not finished,
        "enqueue_seconds": enqueued - started[0],
        "seconds": seconds,
        "per_s": completed / seconds if seconds > 0 else 0.0,
        "cost": cost,
        "per_scan": per_item(cost, count, intake_cpu),
        "failure_samples": common.failure_samples(owner),
        # where the scans that did not end stopped: (status, step) → count
        "unfinished": {
            f"{row['status']}/{row['step']}": row["n"]
            for row in Scan.objects.filter(owner=owner)
            .exclude(status__in=TERMINAL_STATUSES)
            .values("status", "step")
            .annotate(n=Count("id"))
        },
        # calls the providers answered, as the scans recorded them (usage per step)
        "recorded_calls": {
            step: Scan.objects.filter(owner=owner, usage__has_key=step).count()
            for step in ("vision", "answer")
        },
    }


def run_raw(count: int, *, env: dict, timeout: float, meter: common.CostMeter) -> dict:
    """``count`` raw chains (bench/raw_celery.py), published and waited for by a subprocess."""
    meter.start()
    figures = common.run_raw("throughput", env, count=count, timeout=timeout)
    cost = meter.stop()
    # the publisher is the raw chains' intake: its CPU while it published
    return {
        **figures,
        "cost": cost,
        "per_chain": per_item(cost, count, figures["publish_cpu_ms"] / 1000),
    }


def run_hooked_chains(count: int, *, timeout: float) -> dict:
    """The former baseline: ``count`` no-op chains through the app's hooks (bench/noop_tasks.py);
    each ends when its third task has a ready state in the app's result table."""
    from celery import states
    from django.db.models import Max
    from django_celery_results.models import TaskResult

    from bench.noop_tasks import noop_chain

    signatures = [noop_chain(str(uuid.uuid4())) for _ in range(count)]
    started = time.time()
    last_ids = [signature.apply_async().id for signature in signatures]
    enqueued = time.time()
    done = TaskResult.objects.filter(task_id__in=last_ids, status__in=states.READY_STATES)
    deadline = time.monotonic() + timeout
    while done.count() < count and time.monotonic() < deadline:
        time.sleep(0.2)
    finished = done.count() >= count
    succeeded = done.filter(status=states.SUCCESS).count()
    last = done.aggregate(last=Max("date_done"))["last"]
    end = last.timestamp() if (finished and last) else time.time()
    seconds = end - started
    return {
        "count": count,
        "completed": succeeded,
        "failed": done.exclude(status=states.SUCCESS).count(),
        "timed_out": not finished,
        "enqueue_seconds": enqueued - started,
        "seconds": seconds,
        "per_s": succeeded / seconds if seconds > 0 else 0.0,
    }


def ledger_hops(scan_ids: list) -> dict[str, float]:
    """Median ms of each leg of a scan, from its attempts (TaskAttempt): created → the first
    step's start, each step's start → the next step's start (its run and the hop to the next),
    the last step's start → the scan's finished_at; and each step's run (the attempt's
    duration: from its start to its final write, which records it before Celery publishes
    the next step). Scans whose attempts are not one closed attempt per step are left out."""
    from scans.models import Scan, TaskAttempt

    scans = {
        row["id"]: row
        for row in Scan.objects.filter(id__in=scan_ids).values("id", "created_at", "finished_at")
    }
    attempts: dict = {}
    for row in TaskAttempt.objects.filter(scan_id__in=scan_ids).order_by("started_at", "id"):
        attempts.setdefault(row.scan_id, []).append(row)
    legs: dict[str, list[float]] = {}
    for scan_id, rows in attempts.items():
        scan = scans[scan_id]
        if (
            scan["finished_at"] is None
            or any(r.finished_at is None for r in rows)
            or len({r.step for r in rows}) != len(rows)
        ):
            continue
        names = [row.step or row.task_name.rsplit(".", 1)[-1] for row in rows]
        marks = [("created", scan["created_at"])]
        marks += [(f"{name} start", row.started_at) for name, row in zip(names, rows, strict=True)]
        marks += [("finished", scan["finished_at"])]
        for (a, at), (b, bt) in itertools.pairwise(marks):
            legs.setdefault(f"{a} → {b}", []).append((bt - at).total_seconds() * 1000)
        for name, row in zip(names, rows, strict=True):
            run = (row.finished_at - row.started_at).total_seconds() * 1000
            legs.setdefault(f"{name} run", []).append(run)
    return {leg: statistics.median(ms) for leg, ms in legs.items()}


def latency_scans(count: int, *, size: tuple[int, int], timeout: float) -> dict:
    """``count`` scans one at a time, each created in autocommit (as an upload is) when the
    previous one ended: latency from its row to its finished_at; the intake's own transactions
    and row writes per scan, counted on this process's connection."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from scans.models import TERMINAL_STATUSES, Scan
    from scans.services import create_scan

    owner = common.bench_user("overhead-latency")
    nonce = uuid.uuid4().hex
    intake: dict[str, int] = {}
    ids, times = [], []
    for i in range(count):
        upload = SimpleUploadedFile(
            f"one-{i}.jpg", common.photo(f"{nonce}-{i}", size), content_type="image/jpeg"
        )
        with common.counting_queries(intake):
            scan = create_scan(owner=owner, image=upload, hint=HINT)
        ids.append(scan.id)
        ended = Scan.objects.filter(id=scan.id, status__in=TERMINAL_STATUSES)
        deadline = time.monotonic() + timeout
        while not ended.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        row = Scan.objects.values("created_at", "finished_at", "status").get(id=scan.id)
        if row["status"] == "completed" and row["finished_at"]:
            times.append((row["finished_at"] - row["created_at"]).total_seconds() * 1000)
    return {
        "count": count,
        "completed": len(times),
        "ms": times,
        "intake_transactions_per_scan": intake["transactions"] / max(1, count),
        "intake_rows_per_scan": intake["rows"] / max(1, count),
        "hops_ms": ledger_hops(ids),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": common.percentile(values, 50), "p99_ms": common.percentile(values, 99)}


def median_of(rounds: list[dict], *path: str) -> float | None:
    values: list[float] = []
    for item in rounds:
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def verdict(name: str, value: float | None) -> dict:
    sign, target = TARGETS[name]
    if value is None:
        return {"value": None, "target": f"{sign} {target:g}", "met": None}
    met = value <= target if sign == "≤" else value >= target
    return {"value": value, "target": f"{sign} {target:g}", "met": met}


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny rounds, embedded defaults")
    parser.add_argument("-n", "--count", type=int, default=500, help="scans, and raw chains")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline, raw … alternating")
    parser.add_argument(
        "--latency-count", type=int, default=100, help="one-at-a-time scans and chains a round"
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed scans and chains first")
    # issue 22 measures on prefork 2: the AI worker's and the raw worker's pool
    parser.add_argument("--pool", default="prefork", help="pool of the AI and raw workers")
    parser.add_argument("--concurrency", type=int, default=2, help="of the AI and raw workers")
    parser.add_argument("--image-concurrency", type=int, default=2, help="prefork, scan.image")
    parser.add_argument("--photo-size", default="320x240", help="WxH of the uploaded photos")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument(
        "--hooked", action="store_true", help="also the no-op chains through the app's hooks"
    )
    parser.add_argument(
        "--providers",
        choices=("fake", "http"),
        default="fake",
        help="fake: zero-latency providers in the worker (bench/providers.py); http: the real "
        "openai client against the fake OpenAI server answering at once",
    )
    args = parser.parse_args()
    if args.smoke:
        args.count, args.rounds, args.latency_count, args.warmup = 6, 2, 3, 1
        args.concurrency, args.image_concurrency, args.timeout = 1, 1, 60.0
    size = common.parse_size(args.photo_size)

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-overhead-")
    env = common.bench_env(args.smoke, var_dir)
    common.prepare_database(env)
    common.setup_django(env)
    common.load_rules()
    pg = common.pg_url(env)
    model = fake = None  # the fake OpenAI server runs for --providers http only
    if args.providers == "http":
        model = fake_model.FakeModel(fake_model.rule_categories(), delay=0.0)
        fake = fake_model.start_fake_openai(model)
        worker_env = {**env, **common.openai_env(fake.base_url)}
    else:
        worker_env = {
            **env,
            "SCAN_VISION_PROVIDER": "bench.providers.ZeroLatencyVisionProvider",
            "SCAN_ANSWER_PROVIDER": "bench.providers.ZeroLatencyAnswerProvider",
        }
    ai_env = worker_env
    if args.pool in ("threads", "gevent") and not args.smoke:
        # as worker-ai in production: the threads share a small connection pool. Not the
        # prefork image worker (as worker-default): Celery closes a prefork child's pool
        # around every task, so each task would open a pool and a connection
        ai_env = {**worker_env, "DB_POOL_MAX_SIZE": str(min(args.concurrency, 16))}
    image = common.image_worker(concurrency=args.image_concurrency, env=worker_env, log_dir=var_dir)
    ai = common.ai_worker(pool=args.pool, concurrency=args.concurrency, env=ai_env, log_dir=var_dir)
    raw = common.raw_worker(pool=args.pool, concurrency=args.concurrency, env=env, log_dir=var_dir)
    print(
        f"pipeline_overhead · {common.profile_name(args.smoke)} · {args.rounds} rounds of "
        f"{args.count} scans vs {args.count} raw chains, then {args.latency_count} of each one "
        "at a time"
    )
    print(f"  workers: {image.describe()} | {ai.describe()} | raw {raw.describe()}")
    described = (
        "OpenAI provider, real openai client → fake OpenAI server answering at once"
        if args.providers == "http"
        else "zero-latency fake providers in the worker (bench/providers.py)"
    )
    print(
        f"  providers: {described}; photos {size[0]}×{size[1]} JPEG, all distinct"
        " (no vision-cache hits)"
    )
    print(
        "  raw Celery: bench/raw_celery.py, no Django, no app hooks, no database; JSON results"
        " (extended, track started) in "
        + ("Redis" if env.get("REDIS_URL") else "files (no Redis in smoke)")
    )
    rounds: list[dict] = []
    try:
        common.start_workers(image, ai, raw)
        pipeline_meter = common.CostMeter(
            [p for w in (image, ai) for p in w.pids()[:1]], pg
        )  # roots only: process_tree_cpu adds their children
        raw_meter = common.CostMeter(raw.pids()[:1], None)  # no database: no PostgreSQL share
        if args.warmup:
            common.purge_queues()
            warm = {
                "scans": run_scans(
                    args.warmup,
                    label="overhead-warmup",
                    size=size,
                    timeout=args.timeout,
                    meter=common.CostMeter([], None),
                ),
                "raw": common.run_raw("throughput", env, count=args.warmup, timeout=args.timeout),
            }
            if args.hooked:
                warm["hooked"] = run_hooked_chains(args.warmup, timeout=args.timeout)
            for name, phase in warm.items():
                if phase["timed_out"]:  # said at once: the timed phases will not do better
                    print(f"  warm-up {name} timed out: {phase}", flush=True)
        for index in range(args.rounds):
            common.purge_queues()
            if fake is not None:
                fake.clear()  # calls are counted by model.stats; the fake's own log only grows
                model.stats.reset()
            scans = run_scans(
                args.count,
                label=f"overhead-{index}",
                size=size,
                timeout=args.timeout,
                meter=pipeline_meter,
            )
            calls = dict(model.stats.count) if model else scans["recorded_calls"]
            chains = run_raw(args.count, env=env, timeout=args.timeout, meter=raw_meter)
            one_scans = latency_scans(args.latency_count, size=size, timeout=args.timeout)
            one_raw = common.run_raw(
                "latency", env, count=args.latency_count, timeout=min(args.timeout, 60.0)
            )
            this = {
                "scans": scans,
                "raw": chains,
                "ratio": scans["per_s"] / chains["per_s"] if chains["per_s"] else 0.0,
                "provider_calls": calls,
                "latency": {
                    "scans": {**one_scans, **summary(one_scans["ms"])},
                    "raw": {**one_raw, **summary(one_raw["ms"])},
                },
            }
            if args.hooked:
                common.purge_queues()
                this["hooked"] = run_hooked_chains(args.count, timeout=args.timeout)
            rounds.append(this)
            print_round(index, this)
    finally:
        common.stop_workers(image, ai, raw)
        if fake is not None:
            fake.stop()

    scan_ms = [ms for r in rounds for ms in r["latency"]["scans"]["ms"]]
    raw_ms = [ms for r in rounds for ms in r["latency"]["raw"]["ms"]]
    medians = {
        "scans_per_s": median_of(rounds, "scans", "per_s"),
        "raw_chains_per_s": median_of(rounds, "raw", "per_s"),
        "ratio": median_of(rounds, "ratio"),
        "cpu_ms_per_scan": median_of(rounds, "scans", "per_scan", "cpu_ms"),
        "cpu_ms_per_raw_chain": median_of(rounds, "raw", "per_chain", "cpu_ms"),
        "worker_transactions_per_scan": median_of(
            rounds, "scans", "per_scan", "worker_transactions"
        ),
        "worker_rows_per_scan": median_of(rounds, "scans", "per_scan", "worker_rows"),
        "intake_transactions_per_scan": median_of(
            rounds, "latency", "scans", "intake_transactions_per_scan"
        ),
        "intake_rows_per_scan": median_of(rounds, "latency", "scans", "intake_rows_per_scan"),
        **{f"scans_{k}": v for k, v in summary(scan_ms).items()},
        **{f"raw_{k}": v for k, v in summary(raw_ms).items()},
    }
    targets = {
        "worker_transactions_per_scan": verdict(
            "worker_transactions_per_scan", medians["worker_transactions_per_scan"]
        ),
        "worker_rows_per_scan": verdict("worker_rows_per_scan", medians["worker_rows_per_scan"]),
        "cpu_ms_per_scan": verdict(
            "cpu_ms_per_scan", medians["cpu_ms_per_scan"] if pg else None
        ),  # without PostgreSQL's share the figure is not the target's
        "ratio": verdict("ratio", medians["ratio"]),
        "p50_ms": verdict("p50_ms", medians["scans_p50_ms"] if scan_ms else None),
        "p99_ms": verdict("p99_ms", medians["scans_p99_ms"] if scan_ms else None),
    }
    print("  median of the rounds (per scan | per raw chain):")
    print(
        f"    throughput      {fmt(medians['scans_per_s'], '.2f')} scans/s | "
        f"{fmt(medians['raw_chains_per_s'], '.2f')} chains/s → ratio "
        f"{fmt(medians['ratio'], '.3f')}"
    )
    print(
        f"    CPU             {fmt(medians['cpu_ms_per_scan'])} ms | "
        f"{fmt(medians['cpu_ms_per_raw_chain'])} ms"
        + ("" if pg else "  (no PostgreSQL share: SQLite)")
    )
    print(
        f"    transactions    workers {fmt(medians['worker_transactions_per_scan'])} + intake "
        f"{fmt(medians['intake_transactions_per_scan'])} | 0"
    )
    print(
        f"    row writes      workers {fmt(medians['worker_rows_per_scan'])} + intake "
        f"{fmt(medians['intake_rows_per_scan'])} | 0"
    )
    print(
        f"    one at a time   p50 {fmt(medians['scans_p50_ms'])} ms, p99 "
        f"{fmt(medians['scans_p99_ms'])} ms | p50 {fmt(medians['raw_p50_ms'])} ms, p99 "
        f"{fmt(medians['raw_p99_ms'])} ms"
    )
    hops = rounds[-1]["latency"]["scans"]["hops_ms"] if rounds else {}
    if hops:
        print("    per-hop (ledger, last round, median ms): " + ", ".join(
            f"{leg} {ms:.1f}" for leg, ms in hops.items()
        ))  # fmt: skip
    print("  targets (issue 22):")
    for name, result in targets.items():
        state = "n/a" if result["met"] is None else ("met" if result["met"] else "NOT met")
        print(
            f"    {name:<30} {fmt(result['value'], '.2f'):>8} (target {result['target']}) {state}"
        )
    if args.smoke:
        print("  smoke: a handful of tasks, not judged")
    complete = (
        bool(rounds)
        and all(
            phase["completed"] == phase["count"] and not phase["timed_out"]
            for r in rounds
            for phase in (r["scans"], r["raw"], *([r["hooked"]] if "hooked" in r else []))
        )
        and all(
            r["latency"][side]["completed"] == r["latency"][side]["count"]
            for r in rounds
            for side in ("scans",)
        )
    )
    common.finish(var_dir, smoke=args.smoke, ok=complete)
    print(
        common.result_line(
            {
                "rounds": rounds,
                "medians": medians,
                "targets": targets,
                "ratio": medians["ratio"],
                "providers": args.providers,
                "pool": args.pool,
                "concurrency": args.concurrency,
                "image_concurrency": args.image_concurrency,
                "photo_size": list(size),
                "postgres": bool(pg),
                "smoke": args.smoke,
            }
        )
    )
    return 0 if complete else 1


def print_round(index: int, r: dict) -> None:
    scans, raw = r["scans"], r["raw"]
    s, c = scans["per_scan"], raw["per_chain"]
    print(
        f"  round {index + 1}: {scans['completed']}/{scans['count']} scans in "
        f"{scans['seconds']:.2f} s → {scans['per_s']:.2f}/s"
        f"{' TIMED OUT' if scans['timed_out'] else ''}, {raw['completed']}/{raw['count']} raw "
        f"chains in {raw['seconds']:.2f} s → {raw['per_s']:.2f}/s"
        f"{' TIMED OUT' if raw['timed_out'] else ''}; ratio {r['ratio']:.3f}",
        flush=True,
    )
    print(
        f"    CPU ms per scan {s['cpu_ms']:.1f} (workers {s['workers_cpu_ms']:.1f}, PostgreSQL "
        f"{fmt(s['postgres_cpu_ms'])}, intake {s['intake_cpu_ms']:.1f}) | per raw chain "
        f"{c['cpu_ms']:.1f} (workers {c['workers_cpu_ms']:.1f}, publisher "
        f"{c['intake_cpu_ms']:.1f}); per scan: transactions {fmt(s['worker_transactions'])}, "
        f"row writes {fmt(s['worker_rows'])} (workers)",
        flush=True,
    )
    if s.get("worker_rows_by_table"):
        print(
            "    row writes per scan by table (workers): "
            + ", ".join(f"{table} {rows:.2f}" for table, rows in s["worker_rows_by_table"].items()),
            flush=True,
        )
    one, one_raw = r["latency"]["scans"], r["latency"]["raw"]
    print(
        f"    one at a time: scans p50 {one['p50_ms']:.1f} ms, p99 {one['p99_ms']:.1f} ms "
        f"({one['completed']}/{one['count']}; intake {one['intake_transactions_per_scan']:.1f} "
        f"transactions, {one['intake_rows_per_scan']:.1f} rows per scan) | raw p50 "
        f"{one_raw['p50_ms']:.1f} ms, p99 {one_raw['p99_ms']:.1f} ms",
        flush=True,
    )
    if scans.get("failure_samples"):
        print(f"    scan failures: {scans['failure_samples']}")
    if scans.get("unfinished"):
        print(f"    scans not ended (status/step: count): {scans['unfinished']}")
    if "hooked" in r:
        print(f"    no-op chains through the app's hooks: {r['hooked']['per_s']:.2f}/s")


if __name__ == "__main__":
    sys.exit(main())
