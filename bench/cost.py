"""cost: provider calls, tokens and cost of 200 scans of 50 distinct photos, and the vision cache.

Each photo is scanned 4 times with the same hint (scans interleaved: photo 1, 2 … 50, 1, 2 …,
as repeat photos arrive in real use), through real workers running the OpenAI provider with
the real ``openai`` client against the fake OpenAI server (tests/fakes), answering at once.
Printed: provider calls counted at the fake (vision, answer), tokens and cost summed from the
database (per scan and per step, as the admin and the daily digest show them), and what the
vision cache saved. The cache must cut vision calls to one per distinct photo (50): PASS/FAIL.
The answer cache cuts answer calls to one per category and situation tags (the fake classifies
by photo, without tags): the number is printed, with the answer cache hits.

The fake's usage is an estimate from what was sent: ~3 UTF-8 bytes a token, 85 tokens per
low-detail image, and OpenAI's prefix caching imitated (the system prompt of a prompt cache key
seen before is billed as cached, in 128-token steps, from 1024 tokens). Prices are the app's
OPENAI_PRICES (USD per 1M tokens).

    python bench/cost.py             # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/cost.py --smoke     # 12 scans of 6 photos, embedded defaults
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.fakes import model as fake_model  # noqa: E402

HINTS = (
    "투명 페트병, 라벨 있음",
    "생수병",
    "",
    "음료 캔",
    "우유팩, 헹굼",
    "택배 상자, 테이프 붙어 있음",
    "유리병",
    "과자 봉지",
    "스티로폼 박스",
    "건전지",
)
STEP_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_usd")


def submit(owner, count: int, photos: list[bytes]) -> None:
    """``count`` scans, photo ``i % len(photos)`` each, with that photo's hint."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from scans.services import create_scan

    for i in range(count):
        index = i % len(photos)
        upload = SimpleUploadedFile(f"photo-{index}.jpg", photos[index], content_type="image/jpeg")
        create_scan(owner=owner, image=upload, hint=HINTS[index % len(HINTS)])


def totals(owner) -> dict:
    """Tokens and cost from the database: per scan totals, and per step from ``usage``."""
    from django.db.models import Count, Q, Sum

    from scans.models import Scan

    scans = Scan.objects.filter(owner=owner)
    summed = scans.aggregate(
        input_tokens=Sum("input_tokens"),
        cached_input_tokens=Sum("cached_input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost_usd=Sum("cost_usd"),
        cache_hits=Count("id", filter=Q(vision_cache_hit=True)),
        answer_cache_hits=Count("id", filter=Q(answer_cache_hit=True)),
        categories=Count("category", distinct=True),
    )
    per_step = {step: dict.fromkeys(STEP_FIELDS, 0) for step in ("vision", "answer")}
    paid = dict.fromkeys(per_step, 0)
    for usage in scans.values_list("usage", flat=True):
        for step, figures in (usage or {}).items():
            if step in per_step and figures:
                paid[step] += 1
                for field in STEP_FIELDS:
                    per_step[step][field] += Decimal(str(figures.get(field, 0) or 0))
    for step in per_step.values():
        step["cost_usd"] = float(step["cost_usd"])
        for field in STEP_FIELDS[:3]:
            step[field] = int(step[field])
    return {
        "tokens": {
            field: int(summed[field] or 0)
            for field in ("input_tokens", "cached_input_tokens", "output_tokens")
        },
        "cost_usd": float(summed["cost_usd"] or 0),
        "cache_hits": summed["cache_hits"],
        "answer_cache_hits": summed["answer_cache_hits"],
        "categories": summed["categories"],
        "per_step": per_step,
        "paid_calls_in_db": paid,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="12 scans of 6 photos, embedded")
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--photos", type=int, default=50, help="distinct photos")
    parser.add_argument("--pool", default="threads", help="pool of the scan.ai.pipeline worker")
    parser.add_argument("--concurrency", type=int, default=8, help="of the scan.ai.pipeline worker")
    parser.add_argument("--image-concurrency", type=int, default=2, help="prefork, scan.image")
    parser.add_argument("--photo-size", default="320x240", help="WxH of the uploaded photos")
    parser.add_argument("--warmup", type=int, default=4, help="untimed, uncounted scans first")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.smoke:
        args.scans, args.photos, args.concurrency, args.image_concurrency = 12, 6, 2, 1
        args.warmup, args.timeout = 2, 60.0
    if not 0 < args.photos <= args.scans:
        parser.error("--photos must be between 1 and --scans")
    size = common.parse_size(args.photo_size)

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-cost-")
    env = common.bench_env(args.smoke, var_dir)
    common.prepare_database(env)
    common.setup_django(env)
    common.load_rules()
    from django.conf import settings

    model = fake_model.FakeModel(fake_model.rule_categories(), delay=0.0)
    fake = fake_model.start_fake_openai(model)
    worker_env = {**env, **common.openai_env(fake.base_url)}
    image = common.image_worker(concurrency=args.image_concurrency, env=worker_env, log_dir=var_dir)
    ai = common.ai_worker(
        pool=args.pool, concurrency=args.concurrency, env=worker_env, log_dir=var_dir
    )
    nonce = uuid.uuid4().hex  # new photos every run: nothing is cached from an earlier run
    photos = [common.photo(f"{nonce}-{i}", size) for i in range(args.photos)]
    try:
        common.start_workers(image, ai)
        common.purge_queues()
        if args.warmup:  # first calls pay for imports and connections; not counted
            warm = common.bench_user("cost-warmup")
            submit(warm, args.warmup, [common.photo(f"{nonce}-w{i}") for i in range(args.warmup)])
            common.wait_until_terminal(warm, args.warmup, args.timeout)
        fake.clear()
        model.reset()
        owner = common.bench_user("cost")
        submit(owner, args.scans, photos)
        finished = common.wait_until_terminal(owner, args.scans, args.timeout)
        vision_calls = len(fake.requests_for_schema(fake_model.VISION_SCHEMA))
        answer_calls = len(fake.requests_for_schema(fake_model.ANSWER_SCHEMA))
    finally:
        common.stop_workers(image, ai)
        fake.stop()

    outcomes = common.scan_outcomes(owner)
    figures = totals(owner)
    completed = outcomes.get("completed", 0)
    vision = figures["per_step"]["vision"]
    per_vision_call = vision["cost_usd"] / vision_calls if vision_calls else 0.0
    without_cache = figures["cost_usd"] + (args.scans - vision_calls) * per_vision_call
    passed = finished and completed == args.scans and vision_calls == args.photos

    print(
        f"cost · {common.profile_name(args.smoke)} · {args.scans} scans of {args.photos} photos "
        f"(same hint per photo, interleaved) · models {settings.OPENAI_VISION_MODEL} / "
        f"{settings.OPENAI_ANSWER_MODEL}"
    )
    print(f"  workers: {image.describe()} | {ai.describe()}")
    print(
        f"  scans: {completed} completed, {outcomes.get('failed', 0)} failed"
        + ("" if finished else " (TIMED OUT)")
    )
    print(
        f"  provider calls at the fake: vision {vision_calls} (expected {args.photos}), "
        f"answer {answer_calls} (at most one per category seen: {figures['categories']})"
    )
    print(f"  vision cache hits (DB): {figures['cache_hits']} of {args.scans} scans")
    print(
        f"  answer cache hits (DB): {figures['answer_cache_hits']} of {args.scans} scans "
        "(the fake's answers depend on the category only)"
    )
    tokens = figures["tokens"]
    print(
        f"  tokens (DB): input {tokens['input_tokens']:,}"
        f" (cached {tokens['cached_input_tokens']:,})"
        f", output {tokens['output_tokens']:,}"
    )
    for step, values in figures["per_step"].items():
        print(
            f"    {step:<7} input {values['input_tokens']:>9,}"
            f" (cached {values['cached_input_tokens']:>9,})"
            f"  output {values['output_tokens']:>7,}  ${values['cost_usd']:.6f}"
        )
    per_scan = figures["cost_usd"] / args.scans if args.scans else 0.0
    print(
        f"  cost (DB): ${figures['cost_usd']:.6f} total · ${per_scan:.7f} per scan · "
        f"${per_scan * 1000:.4f} per 1,000 scans"
    )
    saved = without_cache - figures["cost_usd"]
    print(
        f"  without the vision cache: ${without_cache:.6f} (the cache saved ${saved:.6f}, "
        f"{saved / without_cache:.0%})"
        if without_cache
        else "  without the vision cache: n/a"
    )
    if vision_calls > args.photos:
        print(
            f"  {vision_calls - args.photos} duplicate vision call(s): scans of one photo "
            "classified at the same time both miss the cache (no in-flight de-duplication)"
        )
    print(
        f"  vision calls cut to one per distinct photo ({args.photos}): "
        f"{'PASS' if passed else 'FAIL'}"
    )
    ok = finished and completed == args.scans
    common.finish(var_dir, smoke=args.smoke, ok=ok)
    print(
        common.result_line(
            {
                "scans": args.scans,
                "photos": args.photos,
                "completed": completed,
                "failed": outcomes.get("failed", 0),
                "timed_out": not finished,
                "vision_calls": vision_calls,
                "answer_calls": answer_calls,
                **figures,
                "cost_per_scan_usd": per_scan,
                "cost_without_cache_usd": without_cache,
                "pass": passed,
                "pool": args.pool,
                "concurrency": args.concurrency,
                "smoke": args.smoke,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
