"""list_growth: a user's list as their history grows, 100 → 100,000 scans (issue 22 §4).

Two users in one database: one with ``--sizes``' first count of scans (100), one with the
last (100,000), filled with SQL (``INSERT … SELECT`` over ``generate_series``, bench/growth.py's
Filler, into the migrated schema with its indexes; then ``VACUUM ANALYZE``). For each user the
harness times, in process (Django's test client, logged in; no HTTP server in between):

- ``api_first`` / ``api_last``: ``GET /api/v1/scans``, the first page and the **last** one
  (the 20 oldest scans) as its links reach it: the cursor of the page before it;
- ``html_first`` / ``html_last``: the history page (``/scans/``), the same two pages;
- ``api_by_number``: ``?page=N`` (for reference, not judged), the deepest page a number still
  reaches: the last one at 100 scans, page 500 (offset 9,980: the count stops at 10,000) at
  100,000. The links do not use it;
- ``sql_offset_last`` (for reference, not judged): the two queries the last page by number
  made before (a full count, then ``OFFSET`` to the last page), without the request around them.

Each figure is the median of ``--repeat`` requests in rounds that alternate between the two
users; the table gives the ratio largest/smallest and PASS when it is at most ``--target``.

    python bench/list_growth.py                  # 100 and 100,000 scans, PostgreSQL (~1 min)
    python bench/list_growth.py --smoke          # 100 and 2,000 scans on SQLite: the harness

The production profile uses ``DATABASE_URL`` (default: bench/common.py's) and leaves it as it
found it: the two users and their scans are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from bench.growth import Filler, time_ms  # noqa: E402

TARGET = 1.5
ROUNDS = 4
JUDGED = ("api_first", "api_last", "html_first", "html_last")
USERNAME = "list-growth-{size}"
PAGE_SIZE = 20  # settings.REST_FRAMEWORK's, the cursor's and the history page's


def remove_users(sizes: list[int]) -> int:
    """The harness's users and their scans (nothing else refers to them); returns the scans."""
    from django.contrib.auth.models import User
    from django.db import connection

    from scans.models import Scan

    users = list(User.objects.filter(username__in=[USERNAME.format(size=s) for s in sizes]))
    if not users:
        return 0
    with connection.cursor() as cursor:  # one statement, not the ORM's cascade row by row
        cursor.execute(
            f"DELETE FROM {Scan._meta.db_table} WHERE owner_id IN "
            f"({', '.join(str(user.pk) for user in users)})"
        )
        deleted = cursor.rowcount
    User.objects.filter(pk__in=[user.pk for user in users]).delete()
    return deleted


def fill(size: int) -> Any:
    """A user with ``size`` completed scans over a year, newest first by ``created_at``."""
    from django.contrib.auth.models import User
    from django.db import connection

    from scans.models import Scan

    user = User.objects.create_user(USERNAME.format(size=size), password="x")
    filler = Filler(connection)
    seconds = f"i * {365 * 24 * 3600 // size}"
    # SQLite compares its text timestamps as strings: written as Django writes them (whole
    # seconds here), or a cursor's position would compare wrongly with them
    created = (
        filler.ago(seconds)
        if filler.pg
        else f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || ({seconds}) || ' seconds')"
    )
    json_cast = "::jsonb" if filler.pg else ""
    filler.series(
        Scan,
        size,
        {
            "id": filler.uuid(f"'list-{size}-' || " + filler.text("i")),
            "owner_id": str(user.pk),
            "image": "'scans/2026/01/01/' || " + filler.text("i") + " || '.jpg'",
            "hint": "'투명 페트병'",
            "status": "'completed'",
            "step": "'done'",
            "progress": "100",
            "classification": '\'{"category_code": "pet_clear", "confidence": 0.93, '
            '"situation_tags": ["label_attached"], "minor_category": "생수병"}\'' + json_cast,
            "answer": '\'{"user_answer": "라벨을 떼고 내용물을 비운 뒤 투명 페트병으로 배출하세요.", '
            '"disposal_steps": ["라벨 제거", "헹구기", "압착"]}\'' + json_cast,
            "outcome": "'classified'",
            "created_at": created,
            "updated_at": created,
            "started_at": created,
            "finished_at": created,
            "dispatched_at": created,
        },
    )
    return user


def last_page_cursor(user: Any, size: int) -> str:
    """``?cursor=…`` of the last page, as the link of the page before it carries it: the
    position of the newest scan before the oldest 20."""
    from rest_framework.pagination import Cursor

    from eco2.pagination import NewestFirstCursorPagination
    from scans.models import Scan

    pager = NewestFirstCursorPagination()
    before_last = (
        Scan.objects.filter(owner=user)
        .order_by(*pager.ordering)
        .values_list("created_at", flat=True)[size - PAGE_SIZE - 1]
    )
    pager.base_url = "/"
    # DRF's positions are the field's str() (its stubs say int)
    position: Any = str(before_last)
    link = pager.encode_cursor(Cursor(offset=0, reverse=False, position=position))
    return link.removeprefix("/")


def operations(user: Any, size: int) -> dict[str, Callable[[], None]]:
    from django.test import Client

    client = Client()
    client.force_login(user)
    last = last_page_cursor(user, size)
    deepest = min(size, 10_000) // 20  # the count's cap: the pages a number reaches

    def get(url: str, check: Callable[[Any], bool]) -> Callable[[], None]:
        def call() -> None:
            response = client.get(url)
            if response.status_code != 200 or not check(response):
                raise SystemExit(f"GET {url}: {response.status_code} {response.content[:300]!r}")

        return call

    def api_page(first: bool) -> Callable[[Any], bool]:
        def check(response: Any) -> bool:
            body = response.json()
            ends = body["previous"] is None if first else body["next"] is None
            return len(body["results"]) == 20 and ends

        return check

    def html_page(response: Any) -> bool:
        return response.content.decode().count('class="history-item"') == 20

    def offset_last_page() -> None:
        """The queries ``?page=`` made for the last page before the list was bounded: a
        full count, then an OFFSET past every other scan (the query alone, no request)."""
        from scans.models import Scan

        mine = Scan.objects.filter(owner=user).order_by("-created_at")
        count = mine.count()
        if not list(mine[(count - 1) // 20 * 20 : count]):
            raise SystemExit("the last page by offset is empty")

    return {
        "sql_offset_last": offset_last_page,
        "api_first": get("/api/v1/scans", api_page(first=True)),
        "api_last": get(f"/api/v1/scans{last}", api_page(first=False)),
        "html_first": get("/scans/", html_page),
        "html_last": get(f"/scans/{last}", html_page),
        "api_by_number": get(f"/api/v1/scans?page={deepest}", lambda r: True),
    }


def report(ms: dict[int, dict[str, float]], target: float) -> dict[str, Any]:
    small, large = min(ms), max(ms)
    print(f"\n{'operation':<16}{f'{small:,} ms':>12}{f'{large:,} ms':>12}{'ratio':>8}  verdict")
    verdicts = {}
    for name in ms[small]:
        ratio = ms[large][name] / ms[small][name] if ms[small][name] else float("inf")
        judged = name in JUDGED
        verdicts[name] = {"ratio": round(ratio, 2), "pass": ratio <= target if judged else None}
        verdict = ("PASS" if ratio <= target else "FAIL") if judged else "(not judged)"
        print(f"{name:<16}{ms[small][name]:>12.2f}{ms[large][name]:>12.2f}{ratio:>8.2f}  {verdict}")
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="100 and 2,000 scans on SQLite")
    parser.add_argument("--sizes", default="", help="two scan counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=0, help="requests timed per figure")
    parser.add_argument("--target", type=float, default=TARGET)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s) or (
        [100, 2_000] if args.smoke else [100, 100_000]
    )
    if len(sizes) != 2 or sizes[0] < 21:
        parser.error("--sizes: two counts, each more than a page (21)")
    repeat = args.repeat or (8 if args.smoke else 100)

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-lists-")
    env = {**common.bench_env(args.smoke, var_dir), "DEBUG": "0"}
    common.prepare_database(env)
    common.setup_django(env)
    import logging

    from django.conf import settings
    from django.db import connection

    logging.getLogger("axes").setLevel(logging.ERROR)  # a line per login otherwise
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    print(f"list_growth: {common.profile_name(args.smoke)}; {connection.vendor}; sizes {sizes}")
    remove_users(sizes)  # what an interrupted run left
    ok = False
    try:
        started = time.monotonic()
        users = {size: fill(size) for size in sizes}
        with connection.cursor() as cursor:
            cursor.execute(
                "VACUUM ANALYZE scans_scan" if connection.vendor == "postgresql" else "ANALYZE"
            )
        print(f"  filled in {time.monotonic() - started:.1f} s (VACUUM ANALYZE included)")
        ops = {size: operations(users[size], size) for size in sizes}
        samples: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
        per_round = max(1, repeat // ROUNDS)
        load_before = os.getloadavg()[0]
        for index in range(ROUNDS):  # alternating: the machine's drift weighs on both alike
            for size in sizes if index % 2 == 0 else reversed(sizes):
                for name, call in ops[size].items():
                    samples[size].setdefault(name, []).extend(time_ms(call, per_round + 1)[1:])
        ms = {
            size: {name: round(statistics.median(v), 3) for name, v in by_name.items()}
            for size, by_name in samples.items()
        }
        verdicts = report(ms, args.target)
        ok = all(v["pass"] for v in verdicts.values() if v["pass"] is not None)
        failed = [name for name, v in verdicts.items() if v["pass"] is False]
        print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'PASS'} (target {args.target}×)")
    finally:
        removed = remove_users(sizes)
    print(common.result_line({
        "smoke": args.smoke,
        "database": connection.vendor,
        "sizes": sizes,
        "repeat": per_round * ROUNDS,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "ms": {str(size): figures for size, figures in ms.items()},
        "verdicts": verdicts,
        "pass": ok,
        "scans_removed": removed,
    }))  # fmt: skip
    shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
