"""`make run` as a person starts it: the Makefile's commands and environment, then honcho with
the Procfile (web, the AI worker on a threads pool, the prefork worker, beat), here on this test
run's database and broker, with the fake OpenAI server as the provider.

The Makefile's install step is skipped (``make -o .venv/.installed``): the virtualenv running
the tests is the one `make run` would use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from notifications.models import Notification, NotificationPreference
from scans.models import ScanStatus, ScanStep, TaskAttempt
from tests.conftest import BASE_DIR, IN_CI, make_photo_bytes, subprocess_env, wait_for_scan
from tests.fakes.openai_server import ok, slow
from tests.integration.pipeline.test_pipeline_openai import ANSWER, GUIDANCE, PET_BOTTLE, VISION
from tests.support.processes import descendants

pytestmark = [pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

VENV = BASE_DIR / ".venv"


@dataclass
class MakeRun:
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _web_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def make_run(worker_manager, fake_openai, rulebase, tmp_path) -> Iterator[MakeRun]:
    missing = [
        what
        for what, there in (
            ("make", shutil.which("make")),
            (str(VENV / "bin" / "honcho"), (VENV / "bin" / "honcho").exists()),
        )
        if not there
    ]
    if missing:
        message = f"`make run` needs {', '.join(missing)} (make install)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    worker_manager.stop()  # the session's worker would take the queues of make run's workers
    port = _free_port()
    env = subprocess_env(
        PORT=str(port),
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_TIMEOUT="10",
    )
    for name in ("SITE_URL", "MAKEFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    log_path = tmp_path / "make-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = MakeRun(port, log_path)
    workers = sum(" worker " in line for line in (BASE_DIR / "Procfile").read_text().splitlines())
    try:
        deadline = time.monotonic() + 120
        while not (_web_answers(port) and run.log().count(" ready.") >= workers):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make run` did not start:\n{run.log()[-6000:]}")
            time.sleep(0.3)
        yield run
    finally:
        started = descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in started:  # anything honcho did not stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_make_run_runs_ai_steps_side_by_side_and_mails_links_to_its_web(
    make_run, fake_openai, user
):
    """With an OpenAI key, scans wait seconds on the provider: the AI steps run on a threads
    pool (before, one prefork worker of 2 processes ran 2 scans at a time), photos on the
    prefork worker. The completion e-mail, written by a worker, links to the web's port (before,
    each worker derived SITE_URL from the PORT honcho gave it: the web's + 100)."""
    fake_openai.set_default_for_schema(VISION, lambda body: slow(3, ok(PET_BOTTLE)))
    fake_openai.set_default_for_schema(ANSWER, lambda body: ok(GUIDANCE))
    user.email = "owner@example.com"
    user.save(update_fields=["email"])
    NotificationPreference.objects.create(user=user, email_on_scan_completed=True)
    client = APIClient()
    client.force_authenticate(user)

    ids = []
    for n in range(5):  # different photos and hints: no scan waits for another's cache entry
        photo = make_photo_bytes(size=(60 + n, 40), color=(20 * n, 100, 50))
        response = client.post(
            "/api/v1/scans",
            {"image": SimpleUploadedFile(f"{n}.jpg", photo), "hint": f"생수병 {n}"},
            format="multipart",
        )
        assert response.status_code == 202, response.content
        ids.append(response.json()["task_id"])
    scans = [wait_for_scan(scan_id, timeout=90) for scan_id in ids]

    assert [scan.status for scan in scans] == [ScanStatus.COMPLETED] * 5, make_run.log()[-4000:]
    arrivals = sorted(r.received_at for r in fake_openai.requests_for_schema(VISION))
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] < 2.5, f"vision calls waited for each other: {arrivals}"
    workers = {
        step: set(
            TaskAttempt.objects.filter(scan_id__in=ids, step=step).values_list("worker", flat=True)
        )
        for step in (ScanStep.PREPARE, ScanStep.VISION, ScanStep.ANSWER)
    }
    assert all(w.startswith("default@") for w in workers[ScanStep.PREPARE]), workers
    assert all(w.startswith("ai@") for w in workers[ScanStep.VISION] | workers[ScanStep.ANSWER])

    mail = Notification.objects.get(scan_id=scans[0].id)
    assert f"http://localhost:{make_run.port}/scans/{scans[0].id}/" in mail.body, mail.body
