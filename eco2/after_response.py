"""Work a request owes but its client need not wait for: run once the response has been sent.

An upload's answer is the stored scan (202 with its task id); publishing its chain to the
broker (a round trip with publisher confirms, plus two outbox writes) is owed too, but the
client does not have to wait for it. ``run_after_response(fn)`` inside a request queues
``fn`` on the response, and Django runs it when it closes the response: under ASGI after the
last byte went out, under WSGI when the server closes the response, in Django's test client
before ``post()`` returns. Outside a request (workers, commands, shell) ``fn`` runs at once.

Nothing is lost if the process dies before the response closes: a scan's row is its outbox
and the relay publishes what is still owed (scans/services/dispatch.py: relay_pending_dispatches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

logger = logging.getLogger(__name__)

_pending: ContextVar[list[Callable[[], object]] | None] = ContextVar(
    "eco2_after_response", default=None
)


def run_after_response(fn: Callable[[], object]) -> None:
    """Run ``fn`` after the current request's response is sent, or now outside a request."""
    pending = _pending.get()
    if pending is None:
        fn()
    else:
        pending.append(fn)


def _run_all(pending: list[Callable[[], object]]) -> None:
    for fn in pending:
        try:
            fn()
        except Exception:  # Django swallows a closer's errors silently; say what failed
            logger.exception("after-response work failed: %r", fn)
    pending.clear()


class AfterResponseMiddleware:
    """Collects the request's run_after_response() work and hands it to the response's close.

    Django calls each of ``response._resource_closers`` from ``HttpResponse.close()``, before
    it sends request_finished (which closes the database connection): the place it uses for
    a file response's file. tests/eco2/test_web_server.py pins that contract.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        pending: list[Callable[[], object]] = []
        token = _pending.set(pending)
        try:
            # a view that raises still returns here: Django turns its exception into a response
            response = self.get_response(request)
        finally:
            _pending.reset(token)
        if pending:
            response._resource_closers.append(lambda: _run_all(pending))
        return response
