"""The worker's task-message consumer: Celery's, except that a malformed message is rejected
(RabbitMQ dead-letters it into scan.ai.dlq) instead of stopping the worker.

Celery 5.7 catches only a few errors while it turns a message into a request
(``Consumer.create_task_handler``: InvalidTaskError, ContentDisallowed, DecodeError). A body
that is JSON of the wrong shape raises elsewhere: ``Request.__init__`` unpacks it as
``args, kwargs, embed`` and a one-key object raises ValueError out of the event loop, which
Celery treats as unrecoverable. The worker exits without acking, RabbitMQ hands the message to
the next worker, and every worker of the queue dies in turn. A body that is not JSON at all is
acked and dropped (``on_decode_error``): lost without a trace.

Why here and not in the task: all of this happens in the consumer before any task code runs
(a ``Task.Request`` subclass would see only messages of our tasks that decoded, and only after
``Request.__init__`` began); the consumer is the one place every message passes. The check
runs before Celery's handler and only reads the message, so nothing Celery does with a message
it accepted changes; Celery already decodes the body in the consumer to build the request
(``message.payload``, cached), so checking it costs no second decode.

A rejected message goes the way Celery sends invalid tasks (``on_invalid_task``: logged,
rejected without requeue, ``task_rejected`` signal); scans/ledger.py records it as a
DeadLetter from that signal, so it shows in the admin and the dead-letter alert.
"""

from __future__ import annotations

import logging
from numbers import Number

from celery.exceptions import InvalidTaskError
from celery.worker import state
from celery.worker.consumer import Consumer as CeleryConsumer
from vine import promise

logger = logging.getLogger(__name__)

MAX_TASK_ID_LENGTH = 255  # the task id columns (TaskResult, TaskAttempt, DeadLetter)


def malformed_message_reason(message, tasks) -> str | None:
    """Why Celery could not build and run a request from ``message``, or None.

    ``tasks``: the app's task registry; a task name it does not know is left to Celery
    (``on_unknown_task`` rejects it), once the rest of the message is readable.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return None  # Celery rejects it (on_unknown_message)
    try:
        payload = message.payload  # decoded once, with the consumer's accept list (JSON only)
    except Exception as exc:  # DecodeError, ContentDisallowed, a broken encoding
        return f"the body cannot be decoded ({type(exc).__name__}: {exc})"
    if "task" in headers:  # protocol 2: the body is [args, kwargs, embed]
        name, task_id = headers.get("task"), headers.get("id")
        if isinstance(payload, dict) and "args" in payload:  # Celery's "hybrid" v1 body
            args, kwargs, embed = payload.get("args", ()), payload.get("kwargs", {}), None
        elif isinstance(payload, list | tuple) and len(payload) == 3:
            args, kwargs, embed = payload
        else:
            return "the body is not [args, kwargs, options]"
    elif isinstance(payload, dict) and "task" in payload:  # protocol 1: all in the body
        name, task_id = payload.get("task"), payload.get("id")
        args, kwargs, embed = payload.get("args", ()), payload.get("kwargs", {}), None
    else:
        return None  # no task name anywhere: Celery rejects it (on_unknown_message)
    if not isinstance(name, str) or not name:
        return "the task name is not a string"
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_TASK_ID_LENGTH:
        return "the message has no usable task id"
    if not isinstance(args, list | tuple):
        return "the positional arguments are not a list"
    if not isinstance(kwargs, dict):
        return "the keyword arguments are not an object"
    if embed is not None and not isinstance(embed, dict):
        return "the options (callbacks, chain, chord) are not an object"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(limit is None or isinstance(limit, Number) for limit in limits)
    ):
        return "the time limits are not [hard, soft]"
    retries = headers.get("retries")
    if retries is not None and not isinstance(retries, int):
        return "the retry count is not an integer"
    task = tasks.get(name)
    check_arguments = getattr(task, "__header__", None)
    if check_arguments is not None:
        try:
            check_arguments(*args, **kwargs)
        except TypeError as exc:
            return f"the arguments do not fit the task ({exc})"
    return None


class Consumer(CeleryConsumer):
    """Set as the app's ``worker_consumer`` (eco2/celery.py)."""

    def create_task_handler(self, promise=promise):
        handle = super().create_task_handler(promise)
        recoverable = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message):
            reason = malformed_message_reason(message, self.app.tasks)
            if reason is not None:
                return self.on_invalid_task(None, message, InvalidTaskError(reason))
            try:
                return handle(message)
            except recoverable:
                raise  # the connection's: Celery reconnects, the broker redelivers
            except Exception as exc:
                # A defect this check did not foresee. Before Celery took the message on (not
                # acked, not reserved for the pool) nothing runs it: reject it rather than let
                # it stop the worker. After that, the error is the worker's: Celery's handling.
                if message.acknowledged or _reserved(message):
                    raise
                logger.exception("rejecting a message Celery could not take on")
                return self.on_invalid_task(None, message, InvalidTaskError(repr(exc)))

        return on_task_received


def _reserved(message) -> bool:
    return any(getattr(request, "message", None) is message for request in state.reserved_requests)
