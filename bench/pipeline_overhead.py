"""pipeline_overhead: N scans through real workers vs N raw three-task no-op Celery chains.

Both phases run in one run, on the same broker, queues, worker processes, pools and settings:

- scans: ``create_scan`` for N distinct photos, then the real chain prepare_image (scan.image)
  → vision_scan → rule_match → answer_gen (scan.ai.pipeline), with zero-latency fake
  providers answering inside the worker (bench/providers.py; ``--providers http`` runs the
  real ``openai`` client against the fake OpenAI server of tests/fakes instead). Not the
  offline provider: its text matcher's embedding model is not what production runs;
- chains: N chains of three no-op tasks (bench/noop_tasks.py) on scan.ai.pipeline.

Each phase is timed from its first enqueue to its last terminal state (the scan's finished_at,
the last no-op task's date_done), queues are purged before it, and the figures are printed:
scans/s, chains/s and their ratio (target ≥ 0.5: the pipeline's own work costs at most as much
as Celery's chain mechanics). The baseline keeps the app's task-wide hooks (django-db results,
the queued-task history, the attempt ledger, metrics), so the ratio isolates what a scan adds.

    python bench/pipeline_overhead.py            # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/pipeline_overhead.py --smoke    # 6 + 6, embedded defaults: checks the harness

Load generator, fake server, workers, database and broker share one machine: the figures are
a floor, and the ratio is the meaningful number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.fakes import model as fake_model  # noqa: E402

HINT = "투명 페트병, 라벨 있음"


def run_scans(count: int, *, label: str, size: tuple[int, int], timeout: float) -> dict:
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
    with transaction.atomic():
        # on_commit callbacks run in order: this one, then each scan's dispatch_pipeline
        transaction.on_commit(lambda: started.append(time.time()))
        for i, data in enumerate(photos):
            upload = SimpleUploadedFile(f"bench-{i}.jpg", data, content_type="image/jpeg")
            create_scan(owner=owner, image=upload, hint=HINT)
    enqueued = time.time()
    finished = common.wait_until_terminal(owner, count, timeout)
    last = Scan.objects.filter(owner=owner).aggregate(last=Max("finished_at"))["last"]
    outcomes = common.scan_outcomes(owner)
    end = last.timestamp() if (finished and last) else time.time()
    seconds = end - started[0]
    return {
        "count": count,
        "completed": outcomes.get("completed", 0),
        "failed": outcomes.get("failed", 0),
        "timed_out": not finished,
        "enqueue_seconds": enqueued - started[0],
        "seconds": seconds,
        "per_s": outcomes.get("completed", 0) / seconds if seconds > 0 else 0.0,
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


def run_chains(count: int, *, timeout: float) -> dict:
    """Publish ``count`` no-op chains; each ends when its third task has a ready state."""
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="6 + 6, embedded defaults")
    parser.add_argument("-n", "--count", type=int, default=1000, help="scans, and chains")
    parser.add_argument("--warmup", type=int, default=20, help="untimed scans and chains first")
    # the production shape (compose's worker-ai): threads sharing a DB connection pool
    parser.add_argument("--pool", default="threads", help="pool of the scan.ai.pipeline worker")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="of the scan.ai.pipeline worker"
    )
    parser.add_argument("--image-concurrency", type=int, default=2, help="prefork, scan.image")
    parser.add_argument("--photo-size", default="320x240", help="WxH of the uploaded photos")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument(
        "--providers",
        choices=("fake", "http"),
        default="fake",
        help="fake: zero-latency providers in the worker (bench/providers.py); http: the real "
        "openai client against the fake OpenAI server answering at once",
    )
    args = parser.parse_args()
    if args.smoke:
        args.count, args.warmup, args.concurrency, args.image_concurrency = 6, 1, 2, 1
        args.timeout = 60.0
    size = common.parse_size(args.photo_size)

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-overhead-")
    env = common.bench_env(args.smoke, var_dir)
    common.prepare_database(env)
    common.setup_django(env)
    common.load_rules()
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
    try:
        common.start_workers(image, ai)
        if args.warmup:
            common.purge_queues()
            warm = {
                "scans": run_scans(
                    args.warmup, label="overhead-warmup", size=size, timeout=args.timeout
                ),
                "chains": run_chains(args.warmup, timeout=args.timeout),
            }
            for name, phase in warm.items():
                if phase["timed_out"]:  # said at once: the timed phases will not do better
                    print(f"  warm-up {name} timed out: {phase}", flush=True)
        common.purge_queues()
        chains = run_chains(args.count, timeout=args.timeout)
        common.purge_queues()
        if fake is not None:
            fake.clear()  # calls are counted by model.stats; the fake's own log only grows
            model.stats.reset()
        scans = run_scans(args.count, label="overhead", size=size, timeout=args.timeout)
        provider_calls = dict(model.stats.count) if model else scans["recorded_calls"]
    finally:
        common.stop_workers(image, ai)
        if fake is not None:
            fake.stop()

    ratio = scans["per_s"] / chains["per_s"] if chains["per_s"] else 0.0
    print(f"pipeline_overhead · {common.profile_name(args.smoke)} · {args.count} scans vs chains")
    print(f"  workers: {image.describe()} | {ai.describe()}")
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
        f"  provider calls during the scans phase: vision {provider_calls['vision']}, "
        f"answer {provider_calls['answer']}"
        + (" (counted at the fake server)" if args.providers == "http" else " (as recorded)")
    )
    for name, figures, unit in (
        ("no-op chains (3 tasks)", chains, "chains/s"),
        ("scans (4 tasks)", scans, "scans/s"),
    ):
        print(
            f"  {name:<24} {figures['completed']:>5}/{figures['count']}"
            f" in {figures['seconds']:7.2f} s"
            f"  → {figures['per_s']:7.2f} {unit}  (enqueue {figures['enqueue_seconds']:.2f} s,"
            f" failed {figures['failed']}{', TIMED OUT' if figures['timed_out'] else ''})"
        )
    if scans.get("failure_samples"):
        print(f"  scan failures: {scans['failure_samples']}")
    if scans.get("unfinished"):
        print(f"  scans not ended (status/step: count): {scans['unfinished']}")
    verdict = "PASS" if ratio >= 0.5 else "FAIL"
    if args.smoke:
        verdict += " (smoke: a handful of tasks, not judged)"
    print(f"  ratio scans/s ÷ chains/s: {ratio:.2f} (target ≥ 0.5) {verdict}")
    complete = all(
        phase["completed"] == phase["count"] and not phase["timed_out"] for phase in (scans, chains)
    )
    common.finish(var_dir, smoke=args.smoke, ok=complete)
    print(
        common.result_line(
            {
                "scans": scans,
                "chains": chains,
                "ratio": ratio,
                "target_met": ratio >= 0.5,
                "providers": args.providers,
                "provider_calls": provider_calls,
                "pool": args.pool,
                "concurrency": args.concurrency,
                "image_concurrency": args.image_concurrency,
                "photo_size": list(size),
                "smoke": args.smoke,
            }
        )
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
