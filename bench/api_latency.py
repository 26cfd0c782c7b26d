"""api_latency: POST /api/v1/scans with a ~1 MB JPEG vs a bare authenticated DRF 202 endpoint.

Both are measured in one run against the same server (uvicorn, 2 workers), with N concurrent
keep-alive clients for D seconds each, and the figures are printed: p50, p95, p99, req/s,
errors, and the ratio of the two throughputs. Targets (issue #7): p99 ≤ 100 ms, 0 errors,
scans req/s ≥ 0.5 × bare req/s.

    python bench/api_latency.py                 # production profile: PostgreSQL, RabbitMQ, Redis
    python bench/api_latency.py --smoke         # 2 s, 2 clients, embedded defaults: checks the harness

The load generator runs on the same 2-core machine as the server, as a real client would not:
the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/eco2_bench",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
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


def prepare(env: dict[str, str]) -> str:
    """Database ready, a user with a token; returns the token."""
    if env.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        name = env["DATABASE_URL"].rsplit("/", 1)[1]
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], **run)
    script = (
        "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token;"
        "u, _ = get_user_model().objects.get_or_create(username='bench');"
        "print(Token.objects.get_or_create(user=u)[0].key)"
    )
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], **run)
    return out.stdout.decode().strip().splitlines()[-1]


def load(
    port: int, path: str, body: bytes, content_type: str, token: str, clients: int, seconds: float
) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
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
                    latencies.append(elapsed)
                else:
                    errors.append(str(getattr(response, "status", response)))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    duration = time.monotonic() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:3],
        "req_per_s": len(latencies) / duration,
        "p50_ms": quantiles[49] * 1000,
        "p95_ms": quantiles[94] * 1000,
        "p99_ms": quantiles[98] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 s, 2 clients, embedded defaults")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds = 2, 2.0

    var_dir = tempfile.mkdtemp(prefix="eco2-bench-")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "ECO2_VAR_DIR": var_dir,
        "PYTHONPATH": str(ROOT),
        # the endpoint is measured, not the per-user cost guard: 30/min would answer 429s, and
        # a huge rate would make DRF's throttle carry a history of every request in a minute
        "SCAN_CREATE_RATE": "",
    }
    if not args.smoke:
        env.update({key: os.environ.get(key, value) for key, value in SERVICES.items()})
        # as in production (Procfile, compose): the web's connection pool, per process
        env.setdefault("DB_POOL_MAX_SIZE", "8")
    token = prepare(env)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "eco2.asgi:application", "--port", str(port),
         "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        photo = jpeg_of_about(1_000_000)
        scan_body, scan_type = multipart(photo, "투명 페트병, 라벨 있음")
        load(port, "/bench/bare", b"{}", "application/json", token, 2, 0.5)  # warm both workers
        load(port, "/api/v1/scans", scan_body, scan_type, token, 2, 0.5)
        bare = load(
            port, "/bench/bare", b"{}", "application/json", token, args.clients, args.seconds
        )
        # the same bare view sent the same 1 MB body: what receiving the upload alone costs
        bare_upload = load(
            port, "/bench/bare", scan_body, scan_type, token, args.clients, args.seconds
        )
        scans = load(port, "/api/v1/scans", scan_body, scan_type, token, args.clients, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=20)

    profile = (
        "smoke (embedded defaults)"
        if args.smoke
        else "production profile (PostgreSQL, RabbitMQ, Redis)"
    )
    print(
        f"api_latency · {profile} · uvicorn --workers {args.workers} · {args.clients} clients × {args.seconds:g} s"
    )
    print(f"upload size: {len(photo) / 1e6:.2f} MB")
    measured = (
        ("bare 202 endpoint", bare),
        ("bare, 1 MB body", bare_upload),
        ("POST /api/v1/scans", scans),
    )
    for name, figures in measured:
        print(
            f"  {name:<20} p50 {figures['p50_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f} ms  "
            f"p99 {figures['p99_ms']:7.1f} ms  {figures['req_per_s']:7.1f} req/s  errors {figures['errors']}"
            + (f" {figures['error_samples']}" if figures["errors"] else "")
        )
    ratio = scans["req_per_s"] / bare["req_per_s"] if bare["req_per_s"] else 0.0
    same_body = scans["req_per_s"] / bare_upload["req_per_s"] if bare_upload["req_per_s"] else 0.0
    print(f"  throughput ratio scans/bare: {ratio:.2f} (target ≥ 0.5); p99 target ≤ 100 ms")
    print(f"  (scans/bare with the same 1 MB body: {same_body:.2f}; not the target's baseline)")
    print(
        "RESULT "
        + json.dumps(
            {
                "bare": bare,
                "bare_upload": bare_upload,
                "scans": scans,
                "ratio": ratio,
                "ratio_same_body": same_body,
            }
        )
    )
    return 0 if scans["requests"] and bare["requests"] and not scans["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
