"""docker/Dockerfile and the build context: multi-stage with a slim, unprivileged runtime, its
HEALTHCHECK run for real against a local server, no .env in the image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from tests.deploy.helpers import ROOT, dockerfile_instructions


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


# --- Dockerfile and build context -----------------------------------------------------------
def test_dockerfile_is_multi_stage_with_a_slim_runtime():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    args = dict(
        rest.split("=", 1)
        for keyword, rest in dockerfile_instructions()
        if keyword == "ARG" and "=" in rest
    )
    runtime_from = stages[-1][0][1].split()[0]
    runtime_image = args.get(runtime_from.strip("${}"), runtime_from)
    assert runtime_image == "python:3.11-slim"
    builder = " ".join(rest for _, rest in stages[0])
    assert "collectstatic" in builder and "compilemessages" in builder and "gettext" in builder
    assert "requirements/runtime.txt" in builder and "--require-hashes" in builder


def test_the_runtime_stage_runs_unprivileged_without_build_tools():
    runtime = dockerfile_stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "gettext", "pip install"):
        assert tool not in runs, f"the runtime stage installs {tool}"
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies and all("--from=" in rest for rest in copies), "runtime copies build results"


def test_dockerfile_has_a_python_healthcheck_an_entrypoint_and_a_default_role():
    runtime = dict(dockerfile_stages()[-1])
    healthcheck = runtime["HEALTHCHECK"]
    assert "/healthz" in healthcheck and "python" in healthcheck and "curl" not in healthcheck
    assert json.loads(runtime["ENTRYPOINT"]) == ["/app/docker/entrypoint.sh"]
    assert json.loads(runtime["CMD"]) == ["web"]


def test_the_image_healthcheck_command_works(tmp_path):
    """Run the Dockerfile's HEALTHCHECK one-liner against a local server: 200 → 0, 503 → 1."""
    healthcheck = dict(dockerfile_stages()[-1])["HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"]
    status = {"code": 200}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Host"]))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PORT": str(server.server_address[1])}
    try:
        ok = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
        status["code"] = 503
        down = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert ok.returncode == 0, ok.stderr
    assert down.returncode != 0
    assert seen[0] == ("/healthz", "localhost")


def test_no_env_file_reaches_the_image():
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            assert ".env" not in rest.split(), rest
            assert not re.search(r"(^|[\s/])\.env\b", rest), rest
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "**/.env", ".git", ".venv", "var/"} <= ignored
