"""Server-Sent Events for a scan's progress.

Polls the Redis mirror when there is one (cheap), else the Scan row, and sends an event only
when status, step or progress changed. The final event carries the whole scan, then the
stream ends. Browsers reconnect by themselves (``retry``), and a stream never outlives
``max_seconds``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from .models import TERMINAL_STATUSES, Scan
from .progress import read_progress


def format_event(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, default=str))
    return "\n".join(lines) + "\n\n"


def _current_state(scan_id: str) -> dict[str, Any] | None:
    state = read_progress(scan_id)
    if state is not None:
        return {k: state.get(k) for k in ("status", "step", "progress")}
    row = Scan.objects.filter(pk=scan_id).values("status", "step", "progress").first()
    return row


def scan_event_stream(
    scan_id: str,
    final_payload: Callable[[], dict[str, Any]],
    *,
    poll_seconds: float = 0.5,
    max_seconds: float = 300.0,
    keepalive_seconds: float = 15.0,
) -> Iterator[str]:
    started = last_sent = time.monotonic()
    last_state = None
    yield "retry: 2000\n\n"
    while True:
        state = _current_state(scan_id)
        if state is None:
            yield format_event("error", {"detail": "Not found."})
            return
        if state != last_state:
            yield format_event("progress", state, event_id=f"{state['step']}-{state['progress']}")
            last_state, last_sent = state, time.monotonic()
        if state["status"] in TERMINAL_STATUSES:
            # the mirror may lead the row by a moment; the final payload comes from the DB
            yield format_event(state["status"], final_payload(), event_id="final")
            return
        now = time.monotonic()
        if now - started > max_seconds:
            yield format_event(
                "timeout", {"detail": "Stream closed; reconnect or poll status_url."}
            )
            return
        if now - last_sent > keepalive_seconds:
            yield ": keepalive\n\n"
            last_sent = now
        time.sleep(poll_seconds)
