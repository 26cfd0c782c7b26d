"""Server-Sent Events for a scan's progress.

Polls the Redis mirror when there is one, else the Scan row, about every half second, and sends a ``progress`` event only when status, step, progress or the current step's retries
changed. The final event (``completed``, ``failed``, or ``needs_input`` when the scan asks which
one it is) carries the whole scan, then the stream ends; a scan resumed by its owner's answer is
followed by a new stream. Browsers reconnect by themselves (``retry``) and send the last event id they saw
(``Last-Event-ID``); a reconnected stream does not repeat that state. Comments keep idle
connections open, and a stream never outlives ``MAX_SECONDS``.

The event logic (:class:`ScanEventStream`) does no I/O of its own; it is driven twice:
asynchronously (:func:`async_scan_event_stream`, for the ASGI server: one coroutine per open
stream, no thread held while it waits) and synchronously (:func:`scan_event_stream`, for WSGI
and Django's test client).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async

from .errors import code_of_text, error_message
from .models import TERMINAL_STATUSES, AttemptOutcome, Scan, ScanStep, TaskAttempt
from .progress import mirror_retries, read_progress
from .stages import PIPELINE_STAGES

POLL_SECONDS = 0.5
MAX_SECONDS = 300.0  # 5 minutes; then a "timeout" event: reconnect or poll status_url
KEEPALIVE_SECONDS = 15.0
RECONNECT_MILLISECONDS = 2000
FINAL_EVENT_ID = "final"


def final_event_id(run: str) -> str:
    """The id of a run's final event: ``final:<the run's chain root>``. A scan can run again
    after it ended (a choice after a question, a retry, a new hint); a client that saw one
    run's end and reconnects once the next run has ended too must get that end, not 204."""
    return f"{FINAL_EVENT_ID}:{run}"


RETRY_OUTCOMES = (AttemptOutcome.RETRY, AttemptOutcome.WORKER_LOST)
# the photo is prepared by a task of its own ("prepare"); the scan shows it as the vision stage
STAGE_TASK_STEPS = {ScanStep.VISION: ("prepare", ScanStep.VISION)}


def format_event(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, default=str))
    return "\n".join(lines) + "\n\n"


def stage_of(task_step: str) -> str:
    """The stage a task's step shows as (the photo's preparation is part of vision)."""
    for stage, task_steps in STAGE_TASK_STEPS.items():
        if task_step in task_steps:
            return stage
    return task_step


def no_retries(step: str) -> dict[str, Any]:
    return {"step": step, "count": 0, "last_error": "", "last_outcome": ""}


def step_retries(scan_id: str, step: str) -> dict[str, Any]:
    """Retries of ``step`` in the scan's current run: attempts that ended in "retry" or
    "worker_lost" since the step last failed for good (a scan resumed by hand starts at 0)."""
    if step not in PIPELINE_STAGES:
        return no_retries(step)
    task_steps = STAGE_TASK_STEPS.get(step, (step,))
    attempts = TaskAttempt.objects.filter(scan_id=scan_id, step__in=task_steps).order_by("id")
    retries: list[dict[str, Any]] = []
    for attempt in attempts.values("outcome", "exception_class", "exception_message"):
        if attempt["outcome"] == AttemptOutcome.FAILED:
            retries = []  # an earlier run of this step; it ended, the scan was resumed
        elif attempt["outcome"] in RETRY_OUTCOMES:
            retries.append(attempt)
    last = retries[-1] if retries else None
    # the reason in the reader's language, from the code the ledger kept; never the exception's
    # own text (an attempt recorded without a code shows only the count)
    code = None
    if last:
        code = code_of_text(last["exception_message"]) or (
            "worker_lost" if last["outcome"] == AttemptOutcome.WORKER_LOST else None
        )
    return {
        "step": step,
        "count": len(retries),
        "last_error": error_message(code) if code else "",
        "last_outcome": last["outcome"] if last else "",
    }


def mirror_step_retries(scan_id: str, task_step: str) -> None:
    """An attempt of ``task_step`` retried or failed (the ledger): its stage's retries go to
    the Redis mirror, where open streams read them (one query here, none per poll there)."""
    stage = stage_of(task_step)
    if stage in PIPELINE_STAGES:
        mirror_retries(scan_id, step_retries(scan_id, stage))


def read_state(scan_id: str) -> dict[str, Any] | None:
    """The scan's live state from the row, with the current step's retries; None if the scan
    no longer exists."""
    row = Scan.objects.filter(pk=scan_id).values("status", "step", "progress").first()
    if row is None:
        return None
    state: dict[str, Any] = dict(row)
    state["retries"] = step_retries(scan_id, state["step"])
    return state


class StateReader:
    """Reads one open stream's state at each poll: from the Redis mirror alone when it has the
    scan, else from the row (:func:`read_state`).

    The mirror carries the retries of the step that last retried or failed (the ledger writes
    them, :func:`mirror_step_retries`). Its state without retries for the current step means
    none were recorded since Redis had the scan; the retries made before that (the mirror
    expired, or Redis was away) are read from the database once, at the stream's first
    mirrored poll, and stand for that step.
    """

    def __init__(self, scan_id: str) -> None:
        self.scan_id = scan_id
        self.opening: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any] | None:
        mirrored = read_progress(self.scan_id)
        if mirrored is None:
            return read_state(self.scan_id)
        state: dict[str, Any] = {k: mirrored[k] for k in ("status", "step", "progress")}
        retries = mirrored.get("retries")
        if not isinstance(retries, dict) or retries.get("step") != state["step"]:
            if self.opening is None:
                self.opening = step_retries(self.scan_id, state["step"])
            same_step = self.opening["step"] == state["step"]
            retries = self.opening if same_step else no_retries(state["step"])
        state["retries"] = retries
        return state


def state_event_id(state: dict[str, Any]) -> str:
    return f"{state['status']}-{state['step']}-{state['progress']}-{state['retries']['count']}"


class ScanEventStream:
    """What to send next, given the latest state. Pure: the drivers do the reading and waiting."""

    def __init__(
        self,
        *,
        last_event_id: str | None = None,
        max_seconds: float | None = None,
        keepalive_seconds: float | None = None,
    ) -> None:
        self.last_id = last_event_id or None
        self.max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
        self.keepalive_seconds = (
            KEEPALIVE_SECONDS if keepalive_seconds is None else keepalive_seconds
        )
        self.started = self.last_sent = time.monotonic()
        self.done = False

    def opening(self) -> str:
        return f"retry: {RECONNECT_MILLISECONDS}\n\n"

    def feed(self, state: dict[str, Any] | None) -> tuple[list[str], str | None]:
        """Chunks to send for ``state``, and the terminal status when the final event is owed
        (its payload, the whole scan, is read by the driver). Sets ``done`` when the stream
        has to end."""
        if state is None:
            self.done = True
            return [format_event("error", {"detail": "Not found."})], None
        chunks = []
        event_id = state_event_id(state)
        if event_id != self.last_id:
            chunks.append(format_event("progress", state, event_id=event_id))
            self.last_id, self.last_sent = event_id, time.monotonic()
        if state["status"] in TERMINAL_STATUSES:
            self.done = True
            return chunks, state["status"]
        now = time.monotonic()
        if now - self.started > self.max_seconds:
            self.done = True
            chunks.append(
                format_event("timeout", {"detail": "Stream closed; reconnect or poll status_url."})
            )
        elif now - self.last_sent > self.keepalive_seconds:
            chunks.append(": keepalive\n\n")
            self.last_sent = now
        return chunks, None

    @staticmethod
    def final(status: str, payload: dict[str, Any], event_id: str) -> str:
        # the mirror may lead the row by a moment; the final payload comes from the DB
        return format_event(status, payload, event_id=event_id)


async def async_scan_event_stream(
    scan_id: str,
    final_payload: Callable[[], Awaitable[tuple[dict[str, Any], str]]],
    *,
    last_event_id: str | None = None,
    poll_seconds: float | None = None,
    max_seconds: float | None = None,
    keepalive_seconds: float | None = None,
) -> AsyncIterator[str]:
    """The stream for an ASGI server: waits with ``asyncio.sleep``, reads in a thread."""
    stream = ScanEventStream(
        last_event_id=last_event_id, max_seconds=max_seconds, keepalive_seconds=keepalive_seconds
    )
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
    read = sync_to_async(StateReader(scan_id))
    yield stream.opening()
    while True:
        chunks, terminal = stream.feed(await read())
        for chunk in chunks:
            yield chunk
        if terminal:
            yield stream.final(terminal, *(await final_payload()))
        if stream.done:
            return
        await asyncio.sleep(poll)


def scan_event_stream(
    scan_id: str,
    final_payload: Callable[[], tuple[dict[str, Any], str]],
    *,
    last_event_id: str | None = None,
    poll_seconds: float | None = None,
    max_seconds: float | None = None,
    keepalive_seconds: float | None = None,
) -> Iterator[str]:
    """The same stream for WSGI servers and the test client (holds a thread while open)."""
    stream = ScanEventStream(
        last_event_id=last_event_id, max_seconds=max_seconds, keepalive_seconds=keepalive_seconds
    )
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
    read = StateReader(scan_id)
    yield stream.opening()
    while True:
        chunks, terminal = stream.feed(read())
        yield from chunks
        if terminal:
            yield stream.final(terminal, *final_payload())
        if stream.done:
            return
        time.sleep(poll)
