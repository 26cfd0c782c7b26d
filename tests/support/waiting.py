"""Waiting for what a worker writes after the moment a test can see: the worker logs a task's
success before its after-return and postrun hooks write the history and the attempt, and a
scan's failure is stored before its message is rejected to the dead-letter queue."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
