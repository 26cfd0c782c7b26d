"""docker/entrypoint.sh (run with stand-ins for python and celery) and docker/healthcheck.py
(run for real against a fake /proc, /proc itself and a local socket)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.deploy.helpers import ENTRYPOINT, load_healthcheck_module


# --- docker/entrypoint.sh (run with stand-ins for python and celery) -----------------------
@pytest.fixture
def fake_bin(tmp_path):
    for tool in ("python", "celery", "uvicorn"):
        script = tmp_path / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $* REMAP_SIGTERM=${{REMAP_SIGTERM:-}}"\n')
        script.chmod(0o755)
    return tmp_path


def run_entrypoint(fake_bin, tmp_path, *args) -> str:
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "CELERY_STATE_DIR": str(tmp_path / "state"),
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_entrypoint_is_executable_and_valid_sh():
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def test_entrypoint_web_role_serves_the_asgi_app(fake_bin, tmp_path):
    out = run_entrypoint(fake_bin, tmp_path, "web")
    assert out.startswith("uvicorn eco2.asgi:application --host 0.0.0.0 --port 8000")
    assert "--proxy-headers" in out and "--timeout-graceful-shutdown" in out


def test_entrypoint_worker_role_soft_shuts_down_on_sigterm(fake_bin, tmp_path):
    out = run_entrypoint(fake_bin, tmp_path, "worker", "--queues=scan.ai.pipeline")
    assert out.startswith("celery -A eco2 worker")
    assert "--queues=scan.ai.pipeline" in out and "--statedb=" in out
    assert out.endswith("REMAP_SIGTERM=SIGQUIT")
    assert run_entrypoint(fake_bin, tmp_path, "beat").startswith("celery -A eco2 beat")
    assert run_entrypoint(fake_bin, tmp_path, "flower").startswith("celery -A eco2 flower")
    assert run_entrypoint(fake_bin, tmp_path, "echo", "any", "command") == "any command"


# --- docker/healthcheck.py ------------------------------------------------------------------
def test_http_check_sends_an_allowed_host_and_needs_2xx():
    health = load_healthcheck_module()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers["Host"])
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()
            self.wfile.write(b'{"status": "fail"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert health.check_http("/readyz", port, "localhost") is None
        problem = health.check_http("/other", port, "localhost")
        assert "503" in problem and "fail" in problem
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["localhost", "localhost"]
    assert health.check_http("/readyz", port, "localhost") is not None  # nothing listens


def test_broker_ports_come_from_the_broker_url():
    health = load_healthcheck_module()
    assert health.broker_ports("amqp://u:p@rabbitmq:5672/eco2") == {5672}
    assert health.broker_ports("amqp://u:p@rabbitmq/eco2") == {5672}
    assert health.broker_ports("amqps://rabbitmq//") == {5671}
    assert health.broker_ports("amqp://a:5673//;amqp://b:5674//") == {5673, 5674}
    assert health.broker_ports("filesystem://localhost//") == set()


def test_worker_check_reads_a_proc_tree(tmp_path):
    """A fake /proc: a worker (pid 4711) whose socket inode 4242 is ESTABLISHED to port 5672."""
    health = load_healthcheck_module()
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"

    def row(sl: int, local_port: str, state: str, inode: int) -> str:
        # 192.168.0.2:<local_port> → 192.168.0.3:5672 (0x1628)
        zeros = "00000000:00000000 00:00000000 00000000"
        return f"{sl:4}: 0200A8C0:{local_port} 0300A8C0:1628 {state} {zeros} 10001 0 {inode} 1\n"

    (proc / "net" / "tcp").write_text(
        header + row(0, "C350", "01", 4242) + row(1, "C351", "08", 4343)
    )
    (proc / "net" / "tcp6").write_text(header)
    worker = proc / "4711"
    (worker / "fd").mkdir(parents=True)
    (worker / "cmdline").write_bytes(
        b"/opt/venv/bin/python\0/opt/venv/bin/celery\0-A\0eco2\0worker\0"
    )
    (worker / "stat").write_text("4711 (celery) S 1 4711 4711 0 -1")
    url = "amqp://eco2:pw@rabbitmq:5672/eco2"

    assert "no ESTABLISHED connection" in health.check_worker(url, proc=proc)
    (worker / "fd" / "3").symlink_to("socket:[4343]")  # CLOSE_WAIT: the broker hung up
    assert "no ESTABLISHED connection" in health.check_worker(url, proc=proc)
    (worker / "fd" / "4").symlink_to("socket:[4242]")
    assert health.check_worker(url, proc=proc) is None
    assert health.check_worker("amqp://eco2:pw@rabbitmq:5673/eco2", proc=proc) is not None

    # with setproctitle installed, Celery retitles its processes: still found
    (worker / "cmdline").write_bytes(
        b"[celeryd: ai@c0ffee:MainProcess] -active- (worker --queues=scan.ai.pipeline)\0"
    )
    assert health.check_worker(url, proc=proc) is None

    (worker / "stat").write_text("4711 (celery) Z 1 4711 4711 0 -1")  # a zombie is not a worker
    assert "no running `celery worker`" in health.check_worker(url, proc=proc)
    assert health.check_worker(url, process_only=True, proc=proc) is not None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_worker_check_sees_a_real_connection():
    health = load_healthcheck_module()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = (
        "import socket, sys, time\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "print('connected', flush=True)\n"
        "time.sleep(30)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(port), "celery", "worker"],
        stdout=subprocess.PIPE,
        text=True,
    )
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "celery", "worker"]
    )
    try:
        assert worker.stdout.readline().strip() == "connected"
        pids = health.find_process(["celery", "worker"])
        assert {worker.pid, idle.pid} <= set(pids)
        assert health.connected_to([worker.pid], {port})
        assert not health.connected_to([idle.pid], {port})
        assert health.check_worker(f"amqp://u:p@127.0.0.1:{port}//") is None
    finally:
        for process in (worker, idle):
            process.kill()
            process.wait()
        listener.close()
