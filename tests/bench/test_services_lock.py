"""Two full benchmark runs at once would take each other's tasks: the second one refuses."""

import subprocess
import sys
import time

import pytest

from bench import common

HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from bench import common
common.SERVICES_LOCK = Path({lock!r})
common.hold_services_lock()
print("held", flush=True)
time.sleep(30)
"""


def test_a_second_full_run_exits_with_a_message_while_one_holds_the_services(tmp_path, monkeypatch):
    lock = tmp_path / "services.lock"
    monkeypatch.setattr(common, "SERVICES_LOCK", lock)
    monkeypatch.setattr(common, "_services_lock", None)
    code = HOLDER.format(root=str(common.ROOT), lock=str(lock))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit, match="another benchmark is running") as refused:
            common.hold_services_lock()
        assert f"pid {holder.pid}" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the holder's end released it
        try:
            common.hold_services_lock()
            break
        except SystemExit:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    common._services_lock.close()
