"""What a pipeline step's end records, written in the transaction that stores its result.

A step's result (the scan's state write) was one commit, and its bookkeeping after it: the
attempt's end (scans.ledger) and the queued history row of the step it passes the scan to
(scans.task_history), a second transaction, and the attempt's start a third. Here the worker
(scans.task_history, at a step's prerun) leaves a writer that the services call inside the
step's final conditional write (``_save_if_active(..., ends_step=True)``): the result, the
attempt and the next step's queued row commit together, or not at all.

Neutral ground: the services cannot import the ledger or the task history (they import the
services), so the writer is handed over here. A write that does not happen (a redelivery, a
scan that ended meanwhile) leaves the writer unused, and the task's end records the attempt as
before (scans.ledger: task_postrun, the result backend).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

_writer: ContextVar[Callable[[], None] | None] = ContextVar("eco2_step_end", default=None)


def expect_step_end(writer: Callable[[], None] | None) -> None:
    """Set (at a step's start) or clear (at its end, None) what its final write records."""
    _writer.set(writer)


def write_step_end() -> bool:
    """Called inside the step's final write's transaction, once the write happened: record
    the step's end with it. False when no step of this thread expects it (a call from a web
    request, a command, the sweeper, or a second final write of the same step)."""
    writer = _writer.get()
    if writer is None:
        return False
    _writer.set(None)
    writer()
    return True


def step_end_expected() -> bool:
    return _writer.get() is not None
