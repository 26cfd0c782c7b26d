"""api_latency: POST /api/v1/scans with a ~1 MB JPEG vs a bare authenticated DRF 202 endpoint.

Everything is measured in one run against the same server (uvicorn, 2 workers), with N
concurrent keep-alive clients: p50, p95, p99, req/s and errors of each endpoint, and each
one's throughput as a fraction of the bare endpoint's. Targets (issue #7): p99 ≤ 100 ms,
0 errors, scans req/s ≥ 0.5 × bare req/s.

Between the two, the **floor** (bench/urls.py): the same upload sent to views that only parse
it, then also store the photo and one row, then also publish one message with confirms. No
upload endpoint can beat the floor's last step on this host, so it says which part of the gap
is the product's own work and which is the host's.

The phases alternate in rounds (default 3 × 10 s each), so a VM whose speed drifts during the
run (this one moves by ±20 % within an hour) biases no endpoint against another.

    python bench/api_latency.py                 # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/api_latency.py --no-floor      # only the bare endpoint and the upload
    python bench/api_latency.py --smoke         # 2 clients, seconds, embedded: checks the harness

The load generator runs on the same 2-core machine as the server, as a real client would not:
the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import http.client
import io
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402


@dataclass(frozen=True)
class Phase:
    key: str
    label: str
    path: str
    sends_photo: bool = True
    floor: bool = False


PHASES = (
    Phase("bare", "bare 202 endpoint", "/bench/bare", sends_photo=False),
    Phase("bare_upload", "bare, 1 MB body", "/bench/bare"),
    Phase("floor_parse", "floor: parse", "/bench/floor/parse", floor=True),
    Phase("floor_store", "  + photo and row", "/bench/floor/store", floor=True),
    Phase("floor_publish", "  + publish", "/bench/floor/publish", floor=True),
    Phase("scans", "POST /api/v1/scans", "/api/v1/scans"),
)


@dataclass
class Tally:
    """One endpoint's requests over all its rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figures(self) -> dict:
        quantiles = (
            statistics.quantiles(self.latencies, n=100) if len(self.latencies) >= 2 else [0.0] * 99
        )
        return {
            "requests": len(self.latencies),
            "errors": len(self.errors),
            "error_samples": sorted(set(self.errors))[:3],
            "req_per_s": len(self.latencies) / self.seconds if self.seconds else 0.0,
            "p50_ms": quantiles[49] * 1000,
            "p95_ms": quantiles[94] * 1000,
            "p99_ms": quantiles[98] * 1000,
        }


def jpeg_of_about(size_bytes: int) -> bytes:
    """Noise compresses badly, so a noise photo of the right size is a realistic upload."""
    from PIL import Image

    side = int((size_bytes / 1.0) ** 0.5)
    rng = random.Random(7)
    image = Image.frombytes(
        "RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side * side * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def multipart(image: bytes, hint: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="hint"\r\n\r\n{hint}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="bench.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare() -> str:
    """A user with a token and an empty floor table (Django is set up); returns the token."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from bench.urls import FLOOR_TABLE, FLOOR_TABLE_DDL

    with connection.cursor() as cursor:
        cursor.execute(FLOOR_TABLE_DDL)
        cursor.execute(f"DELETE FROM {FLOOR_TABLE}")
    user, _ = get_user_model().objects.get_or_create(username="bench")
    return Token.objects.get_or_create(user=user)[0].key


def clean_up(since) -> dict[str, int]:
    """Drop what the run left in the services: the scans it created (their photos went with
    the run's folder), their chains and the floor's messages in the broker, the floor table."""
    from django.db import connection

    from bench.urls import FLOOR_QUEUE, FLOOR_TABLE
    from eco2.celery import app
    from scans.models import Scan

    # delete() counts the rows that went with them too (ledger, events); report the scans
    _, deleted_by_model = Scan.objects.filter(
        owner__username="bench", created_at__gte=since
    ).delete()
    deleted = deleted_by_model.get(Scan._meta.label, 0)
    purged = common.purge_queues()
    with app.connection_for_write() as conn:
        floor_queue = FLOOR_QUEUE(conn.default_channel)
        floor_queue.declare()
        purged[FLOOR_QUEUE.name] = floor_queue.purge() or 0
        floor_queue.delete()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
    return {"scans_deleted": deleted, **{f"purged_{name}": n for name, n in purged.items()}}


def load(
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    token: str,
    clients: int,
    seconds: float,
    tally: Tally,
) -> None:
    """``clients`` keep-alive connections POST back to back for ``seconds``; adds to ``tally``."""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.connect()
        # http.client sends headers and body in separate segments: without TCP_NODELAY,
        # Nagle and the server's delayed ACK add ~40 ms to every request of the client
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def client() -> None:
        conn = connect()
        headers = {"Authorization": f"Token {token}", "Content-Type": content_type}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 202
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = connect()
                ok, response = False, exc
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    tally.latencies.append(elapsed)
                else:
                    tally.errors.append(str(getattr(response, "status", response)))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.seconds += time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="2 clients, seconds, embedded defaults"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="per endpoint, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="the phases alternate this often")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor endpoints")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds, args.rounds = 2, 2.0, 2
    if args.rounds < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--rounds and --clients must be at least 1, --seconds above 0")
    phases = [phase for phase in PHASES if not (phase.floor and args.no_floor)]

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-api-")
    env = common.bench_env(args.smoke, var_dir)  # SCAN_CREATE_RATE off: the endpoint is measured
    if not args.smoke:
        # as in production (Procfile, compose): the web's connection pool, per process
        env.setdefault("DB_POOL_MAX_SIZE", "8")
    common.prepare_database(env)
    common.setup_django(env)
    from django.utils import timezone

    run_started = timezone.now()
    token = prepare()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "eco2.asgi:application", "--port", str(port),
         "--workers", str(args.workers), "--lifespan", "off", "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    tallies = {phase.key: Tally() for phase in phases}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        photo = jpeg_of_about(1_000_000)
        photo_body, photo_type = multipart(photo, "투명 페트병, 라벨 있음")

        def request_of(phase: Phase) -> tuple[bytes, str]:
            return (photo_body, photo_type) if phase.sends_photo else (b"{}", "application/json")

        for phase in phases:  # warm both workers on every endpoint; not counted
            load(port, phase.path, *request_of(phase), token, 2, 0.5, Tally())
        for _ in range(args.rounds):
            for phase in phases:
                load(
                    port,
                    phase.path,
                    *request_of(phase),
                    token,
                    args.clients,
                    args.seconds / args.rounds,
                    tallies[phase.key],
                )
    finally:
        server.terminate()
        server.wait(timeout=20)
        try:
            left = clean_up(run_started)
        except Exception as exc:  # say so, without hiding what made the run stop
            left = {"error": repr(exc)}
        shutil.rmtree(var_dir, ignore_errors=True)  # ~1 MB per accepted upload

    figures = {key: tally.figures() for key, tally in tallies.items()}
    bare_rps = figures["bare"]["req_per_s"]
    for row in figures.values():
        row["of_bare"] = row["req_per_s"] / bare_rps if bare_rps else 0.0
    print(
        f"api_latency · {common.profile_name(args.smoke)} · uvicorn --workers {args.workers} · "
        f"{args.clients} clients × {args.seconds:g} s per endpoint in {args.rounds} rounds"
    )
    print(f"upload size: {len(photo) / 1e6:.2f} MB")
    print(f"  {'':<20} {'p50':>9} {'p95':>9} {'p99':>9} {'req/s':>8} {'÷ bare':>7}  errors")
    for phase in phases:
        row = figures[phase.key]
        print(
            f"  {phase.label:<20} {row['p50_ms']:6.1f} ms {row['p95_ms']:6.1f} ms "
            f"{row['p99_ms']:6.1f} ms {row['req_per_s']:8.1f} {row['of_bare']:7.2f}  {row['errors']}"
            + (f" {row['error_samples']}" if row["errors"] else "")
        )
    scans = figures["scans"]
    ratio = scans["of_bare"]
    ratio_met = ratio >= 0.5
    p99_met = scans["p99_ms"] <= 100.0 and scans["errors"] == 0
    print(
        f"  throughput ratio scans/bare: {ratio:.2f} (target ≥ 0.5) {'PASS' if ratio_met else 'FAIL'}; "
        f"p99 {scans['p99_ms']:.1f} ms (target ≤ 100 ms, 0 errors) {'PASS' if p99_met else 'FAIL'}"
    )
    if "floor_publish" in figures:
        floor = figures["floor_publish"]
        print(
            f"  the floor (parse, photo and row, one confirmed publish): {floor['of_bare']:.2f} of "
            f"the bare endpoint, p99 {floor['p99_ms']:.1f} ms; the upload does "
            f"{scans['req_per_s'] / floor['req_per_s'] if floor['req_per_s'] else 0:.2f} of the floor's req/s"
        )
    print(f"  cleaned up: {left}")
    print(
        common.result_line(
            {
                **figures,
                "ratio": ratio,
                "ratio_same_body": scans["req_per_s"] / figures["bare_upload"]["req_per_s"]
                if figures["bare_upload"]["req_per_s"]
                else 0.0,
                "targets": {"ratio": ratio_met, "p99": p99_met},
                "cleaned_up": left,
            }
        )
    )
    ok = all(row["requests"] and not row["errors"] for row in figures.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
