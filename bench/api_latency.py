"""api_latency: POST /api/v1/scans with a ~1 MB JPEG, at saturation and at an offered load.

Everything is measured in one run against the same server (uvicorn, 2 workers):

- **Saturation** (closed loop): N concurrent keep-alive clients (16) send back to back; the
  req/s of each endpoint is its saturation throughput on this host, with its p50/p95/p99.
  The endpoints: a bare authenticated DRF 202 view (sent an empty body, then the same 1 MB
  body), the **floor** (bench/urls.py: views that only parse the upload, then also store the
  photo and one row, then also publish one message with confirms: no upload endpoint can beat
  the floor's last step on this host), and the upload itself.
- **One client** (closed loop): the upload's service time, without queueing.
- **Open loop** (issue 22 §3): requests arrive at a fixed rate, 25 %, 50 % and 75 % of the
  upload's measured saturation, one every 1/rate s whatever the answers, from a pool of
  threads; each latency is counted from the request's *scheduled* send time, so a request
  the generator could not send on time (every thread busy) counts its wait too. The floor's
  last step is sent the 50 % load as well, for comparison.

Targets (issue 22): the upload's p99 ≤ 30 ms at one client, p99 ≤ 60 ms at 50 % of its
saturation (open loop, 0 errors), its saturation throughput ≥ 0.9 of the floor's. The ratio to
the bare view (issue 7's target, replaced) is still printed.

The closed-loop phases alternate in rounds (default 3 × 10 s each), so a VM whose speed drifts
during the run (this one moves by ±20 % within an hour) biases no endpoint against another;
the open-loop levels alternate in rounds too, after them (their rates come from the
saturation measured).

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
from collections import Counter
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
    # open loop: how late each request left the generator after its scheduled time
    start_lags: list[float] = field(default_factory=list)
    rate: float = 0.0  # open loop: requests due per second

    def figures(self) -> dict:
        figures = {
            "requests": len(self.latencies),
            "errors": len(self.errors),
            "error_samples": sorted(set(self.errors))[:3],
            "req_per_s": len(self.latencies) / self.seconds if self.seconds else 0.0,
            **{f"{name}_ms": value for name, value in percentiles(self.latencies).items()},
        }
        if self.rate:
            figures["offered_per_s"] = self.rate
            figures["start_lag_p99_ms"] = percentiles(self.start_lags)["p99"]
        return figures


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 in ms (0 with fewer than two values)."""
    quantiles = statistics.quantiles(values, n=100) if len(values) >= 2 else [0.0] * 99
    return {"p50": quantiles[49] * 1000, "p95": quantiles[94] * 1000, "p99": quantiles[98] * 1000}


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


_purged: Counter[str] = Counter()  # every message drain_queues took off, by queue


def drain_queues() -> None:
    """Purge what the uploads and the floor published: no worker consumes them here, and a
    queue tens of thousands of persistent messages long makes RabbitMQ stall its publishers
    (seen: 2 s without an answer, the next phase's tail), which a deployment with workers
    never sees. Between phases, outside their measured windows."""
    from bench.urls import FLOOR_QUEUE
    from eco2.celery import app

    _purged.update(common.purge_queues())
    with app.connection_for_write() as conn:
        floor_queue = FLOOR_QUEUE(conn.default_channel)
        floor_queue.declare()
        _purged[FLOOR_QUEUE.name] += floor_queue.purge() or 0


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
    drain_queues()
    with app.connection_for_write() as conn:
        FLOOR_QUEUE(conn.default_channel).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
    return {"scans_deleted": deleted, **{f"purged_{name}": n for name, n in _purged.items()}}


def connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    # http.client sends headers and body in separate segments: without TCP_NODELAY,
    # Nagle and the server's delayed ACK add ~40 ms to every request of the client
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


@dataclass(frozen=True)
class Request:
    port: int
    path: str
    body: bytes
    content_type: str
    token: str

    def send(self, conn: http.client.HTTPConnection) -> tuple[http.client.HTTPConnection, str]:
        """POST once on ``conn``; returns the connection to go on with (a new one after an
        error) and "" on a 202, else what went wrong."""
        headers = {"Authorization": f"Token {self.token}", "Content-Type": self.content_type}
        for attempt in (1, 2):
            try:
                conn.request("POST", self.path, body=self.body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # the server closed a keep-alive connection that sat idle (an open loop's
                # sender waits between requests): once more on a new one
                conn.close()
                conn = connect(self.port)
                if attempt == 2:
                    return conn, repr(exc)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                return connect(self.port), repr(exc)
            else:
                return conn, "" if response.status == 202 else str(response.status)
        raise AssertionError("unreachable")


def load(request: Request, clients: int, seconds: float, tally: Tally) -> None:
    """Closed loop: ``clients`` keep-alive connections POST back to back for ``seconds``."""
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = connect(request.port)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn, error = request.send(conn)
            elapsed = time.perf_counter() - started
            with lock:
                if error:
                    tally.errors.append(error)
                else:
                    tally.latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.seconds += time.monotonic() - started


def open_loop(request: Request, rate: float, seconds: float, tally: Tally, pool: int) -> None:
    """Open loop: request ``i`` is due at ``start + i / rate`` for ``seconds``, whatever the
    answers. ``pool`` threads with a keep-alive connection each take the next due request,
    wait for its time and send it; a latency counts from the due time, so a request that
    found every thread busy counts its wait in the generator too."""
    lock = threading.Lock()
    total = max(1, round(rate * seconds))
    due = iter(range(total))
    connections = [connect(request.port) for _ in range(pool)]
    start = time.perf_counter() + 0.05  # every thread started

    def sender(conn: http.client.HTTPConnection) -> None:
        while True:
            with lock:
                index = next(due, None)
            if index is None:
                break
            scheduled = start + index / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            lag = time.perf_counter() - scheduled
            conn, error = request.send(conn)
            elapsed = time.perf_counter() - scheduled
            with lock:
                tally.start_lags.append(max(0.0, lag))
                if error:
                    tally.errors.append(error)
                else:
                    tally.latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=sender, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.seconds += time.perf_counter() - start
    tally.rate = rate


LEVELS = (0.25, 0.5, 0.75)  # the open loop's rates, as fractions of the upload's saturation
HALF_LOAD = 0.5
TARGETS = {  # issue 22 §3
    "p99_one_client": ("≤", 30.0, "the upload's p99 at one client, ms"),
    "p99_half_load": ("≤", 60.0, "the upload's p99 at 50 % of its saturation (open loop), ms"),
    "saturation_of_floor": ("≥", 0.9, "the upload's saturation req/s ÷ the floor's"),
}


def judge(values: dict[str, float | None]) -> dict[str, dict]:
    """Each target with its value and verdict (``pass`` None when not measured)."""
    verdicts = {}
    for name, (sense, target, _) in TARGETS.items():
        value = values.get(name)
        met = None if value is None else (value <= target if sense == "≤" else value >= target)
        verdicts[name] = {"target": target, "value": value, "pass": met}
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="2 clients, seconds, embedded defaults"
    )
    parser.add_argument("--clients", type=int, default=16, help="closed loop: the saturation")
    parser.add_argument("--seconds", type=float, default=30.0, help="per endpoint, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="the phases alternate this often")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor endpoints")
    parser.add_argument("--pool", type=int, default=32, help="open loop: sender threads")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds, args.rounds, args.pool = 2, 2.0, 2, 4
    if args.rounds < 1 or args.clients < 1 or args.seconds <= 0 or args.pool < 1:
        parser.error("--rounds, --clients and --pool must be at least 1, --seconds above 0")
    phases = [phase for phase in PHASES if not (phase.floor and args.no_floor)]
    per_round = args.seconds / args.rounds

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
    one_client = Tally()
    opened = {level: Tally() for level in LEVELS}
    floor_opened = Tally()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        photo = jpeg_of_about(1_000_000)
        photo_body, photo_type = multipart(photo, "투명 페트병, 라벨 있음")
        requests = {
            phase.key: Request(
                port,
                phase.path,
                *((photo_body, photo_type) if phase.sends_photo else (b"{}", "application/json")),
                token,
            )
            for phase in phases
        }
        upload, floor = requests["scans"], requests.get("floor_publish")

        for phase in phases:  # warm both workers on every endpoint; not counted
            load(requests[phase.key], 2, 0.5, Tally())
        # saturation and one client, closed loop: the phases alternate in rounds
        for _ in range(args.rounds):
            for phase in phases:
                load(requests[phase.key], args.clients, per_round, tallies[phase.key])
                drain_queues()
            load(upload, 1, per_round, one_client)
        # offered loads, open loop, at fractions of the upload's saturation just measured
        saturation = tallies["scans"].figures()["req_per_s"]
        for _ in range(args.rounds):
            for level in LEVELS:
                open_loop(upload, level * saturation, per_round, opened[level], args.pool)
                drain_queues()
            if floor is not None:
                open_loop(floor, HALF_LOAD * saturation, per_round, floor_opened, args.pool)
                drain_queues()
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
    one = one_client.figures()
    open_figures = {str(round(level * 100)): opened[level].figures() for level in LEVELS}
    floor_open = floor_opened.figures() if floor is not None else None
    scans = figures["scans"]
    floor_rps = figures["floor_publish"]["req_per_s"] if floor is not None else None
    of_floor = scans["req_per_s"] / floor_rps if floor_rps else None

    print(
        f"api_latency · {common.profile_name(args.smoke)} · uvicorn --workers {args.workers} · "
        f"closed loop {args.clients} clients (and 1) × {args.seconds:g} s per endpoint, open loop "
        f"{args.seconds:g} s per load, in {args.rounds} rounds"
    )
    print(f"upload size: {len(photo) / 1e6:.2f} MB")
    print(f"saturation, closed loop, {args.clients} clients:")
    print(f"  {'':<22} {'p50':>9} {'p95':>9} {'p99':>9} {'req/s':>8} {'÷ bare':>7}  errors")
    for label, row in [
        *((phase.label, figures[phase.key]) for phase in phases),
        ("  … 1 client", {**one, "of_bare": 0.0}),
    ]:
        print(
            f"  {label:<22} {row['p50_ms']:6.1f} ms {row['p95_ms']:6.1f} ms "
            f"{row['p99_ms']:6.1f} ms {row['req_per_s']:8.1f} {row['of_bare']:7.2f}  {row['errors']}"
            + (f" {row['error_samples']}" if row["errors"] else "")
        )
    print(
        f"offered load, open loop (latency from each request's due time; {args.pool} sender "
        "threads):"
    )
    print(
        f"  {'':<22} {'offered':>8} {'req/s':>8} {'p50':>9} {'p95':>9} {'p99':>9} "
        f"{'late p99':>9}  errors"
    )
    rows = [(f"upload at {key} %", row) for key, row in open_figures.items()]
    if floor_open is not None:
        rows.append((f"floor at {round(HALF_LOAD * 100)} %", floor_open))
    for label, row in rows:
        print(
            f"  {label:<22} {row['offered_per_s']:8.1f} {row['req_per_s']:8.1f} "
            f"{row['p50_ms']:6.1f} ms {row['p95_ms']:6.1f} ms {row['p99_ms']:6.1f} ms "
            f"{row['start_lag_p99_ms']:6.1f} ms  {row['errors']}"
            + (f" {row['error_samples']}" if row["errors"] else "")
        )
    half = open_figures["50"]
    targets = judge(
        {
            "p99_one_client": one["p99_ms"] if not one["errors"] else float("inf"),
            "p99_half_load": half["p99_ms"] if not half["errors"] else float("inf"),
            "saturation_of_floor": of_floor,
        }
    )
    print("targets (issue 22):")
    for name, verdict in targets.items():
        sense, target, label = TARGETS[name]
        value = verdict["value"]
        shown = "not measured (--no-floor)" if value is None else f"{value:.2f}"
        mark = {True: "PASS", False: "FAIL", None: "—"}[verdict["pass"]]
        print(f"  {label}: {shown} (target {sense} {target:g}) {mark}")
    ratio = scans["of_bare"]
    print(
        f"  for reference: saturation {scans['req_per_s']:.1f} req/s = {ratio:.2f} of the bare "
        "view's (issue 7's target ≥ 0.5, replaced)"
        + (
            f"; the floor {floor_rps:.1f} req/s = {figures['floor_publish']['of_bare']:.2f} of it"
            if floor_rps
            else ""
        )
    )
    print(f"  cleaned up: {left}")
    print(
        common.result_line(
            {
                **figures,
                "one_client": one,
                "open_loop": open_figures,
                "floor_open_50": floor_open,
                "saturation": {
                    "scans": scans["req_per_s"],
                    "floor": floor_rps,
                    "of_floor": of_floor,
                },
                "ratio": ratio,
                "ratio_same_body": scans["req_per_s"] / figures["bare_upload"]["req_per_s"]
                if figures["bare_upload"]["req_per_s"]
                else 0.0,
                "targets": targets,
                "cleaned_up": left,
            }
        )
    )
    measured = [
        *figures.values(),
        one,
        *open_figures.values(),
        *([floor_open] if floor_open else []),
    ]
    ok = all(row["requests"] and not row["errors"] for row in measured)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
