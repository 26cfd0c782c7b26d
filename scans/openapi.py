"""The parts of the OpenAPI schema that drf-spectacular cannot see in the code.

The live-progress stream (``api:scan-events``) is a plain async Django view, not a DRF view
(an open stream must cost a coroutine, not a thread), so drf-spectacular does not list it.
A postprocessing hook adds it, next to the scan it follows, with the same security and the
responses the view gives.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from django.urls import reverse

from .events import FINAL_EVENT_ID, MAX_SECONDS, RECONNECT_MILLISECONDS

STREAM_DESCRIPTION = f"""\
Server-Sent Events (`text/event-stream`) until the scan ends; open it with `EventSource` or
`curl -N`. The stream starts with `retry: {RECONNECT_MILLISECONDS}`, then sends:

- `progress` — `{{"status", "step", "progress", "retries": {{"step", "count", "last_error",
  "last_outcome"}}}}`, only when one of them changed; its `id` is that state, so a client that
  reconnects with `Last-Event-ID` is not sent the same state again;
- `completed`, `failed` or `needs_input` — the whole scan (the `Scan` schema), with id
  `{FINAL_EVENT_ID}:<run>` (the run's chain root); then the stream ends. `needs_input`: the scan
  was not sure and asks which one it is (its `question` has the choices); once it is answered
  (`POST …/choose` or `POST …/hint`) it runs again, and a new stream follows it (the earlier
  run's final id is then no longer a 204, also when the new run has already ended);
- `timeout` — after {MAX_SECONDS:.0f} s without an end: reconnect, or poll the scan;
- `error` — the scan was deleted while the stream was open.

Comment lines (`: keepalive`) keep an idle connection open. Only the scan's owner and staff
can follow it; any other scan id is 404, as for the scan itself."""


def scan_events_operation(scan_operation: dict[str, Any]) -> dict[str, Any]:
    """The stream's operation; its path parameter and security are the scan's own (the view
    authenticates with the API's authentication classes)."""
    return {
        "operationId": "scans_events_retrieve",
        "summary": "Live status, step and progress of a scan (Server-Sent Events)",
        "description": STREAM_DESCRIPTION,
        "tags": scan_operation.get("tags", ["scans"]),
        "parameters": [
            *scan_operation.get("parameters", []),
            {
                "in": "header",
                "name": "Last-Event-ID",
                "schema": {"type": "string"},
                "required": False,
                "description": "The id of the last event received (browsers send it when "
                f"they reconnect). The final event's id (`{FINAL_EVENT_ID}:<run>`) of the "
                "scan's current run, once it has ended, answers 204.",
            },
        ],
        "security": scan_operation.get("security", []),
        "responses": {
            "200": {
                "description": "The event stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "204": {
                "description": "The scan has ended (completed, failed, or needs_input and not "
                "answered yet) and the client saw its final event."
            },
            "401": {"description": "Invalid token."},
            "403": {"description": "Authentication credentials were not provided."},
            "404": {"description": "No scan with this task id (or not yours)."},
            "405": {"description": "Only GET."},
        },
    }


def add_scan_events_path(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: list the event stream after its scan."""
    events_path = unquote(reverse("api:scan-events", kwargs={"task_id": "{task_id}"}))
    scan_path = unquote(reverse("api:scan-detail", kwargs={"task_id": "{task_id}"}))
    paths: dict[str, Any] = {}
    for name, item in result.get("paths", {}).items():
        paths[name] = item
        if name == scan_path:
            paths[events_path] = {"get": scan_events_operation(item.get("get", {}))}
    result["paths"] = paths
    return result
