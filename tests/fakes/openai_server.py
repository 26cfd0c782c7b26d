"""A local stand-in for OpenAI's chat-completions API, for tests.

OpenAI is unreachable from the test machine, and the code under test talks to it through the
real ``openai`` client (sometimes from a Celery worker subprocess). So instead of mocking the
client, tests run this small HTTP server on 127.0.0.1 and point ``base_url`` at it: the real
client, its error mapping, its timeouts and its headers are all exercised.

Tests script what the "model" answers with replies built by :func:`ok`, :func:`refusal`,
:func:`malformed`, :func:`rate_limited`, :func:`server_error`, :func:`slow` and
:func:`broken_connection`, queued with :meth:`FakeOpenAI.enqueue` (or per response schema with
:meth:`FakeOpenAI.enqueue_for_schema`). Every request is recorded for later assertions.

Standard library only, so the fake has no dependencies of its own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")

# Content that is cut off mid-string, as when a model response is truncated.
MALFORMED_CONTENT = '{"major_category": "재활'


# --- what was received --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the fake received it. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None when absent or not JSON
    raw: bytes
    received_at: float  # time.monotonic(), to check pacing such as retry back-off

    @property
    def schema_name(self) -> str | None:
        """The ``response_format.json_schema.name`` of the request, if any."""
        return schema_name_of(self.body)


def schema_name_of(body: Any) -> str | None:
    """Read ``response_format.json_schema.name``, tolerating any missing or odd level."""
    if not isinstance(body, dict):
        return None
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    json_schema = response_format.get("json_schema")
    if not isinstance(json_schema, dict):
        return None
    name = json_schema.get("name")
    return name if isinstance(name, str) else None


# --- what to answer -----------------------------------------------------------------------------


class Reply:
    """Something the fake can answer a chat-completions request with."""

    def send(self, handler: _Handler, body: dict) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Completion(Reply):
    """A 200 chat completion; ``content``/``refusal`` go into ``choices[0].message``."""

    content: str | None
    refusal: str | None = None
    prompt_tokens: int = 100
    completion_tokens: int = 20
    cached_tokens: int = 0

    def send(self, handler: _Handler, body: dict) -> None:
        handler.send_json(200, self.payload(body, handler.fake.next_completion_id()))

    def payload(self, body: dict, completion_id: str) -> dict:
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or "gpt-fake",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": self.content,
                        "refusal": self.refusal,
                    },
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }


@dataclass(frozen=True)
class HttpError(Reply):
    """An error status with OpenAI's ``{"error": {...}}`` body and optional extra headers."""

    status: int
    message: str
    type: str
    code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def send(self, handler: _Handler, body: dict) -> None:
        payload = error_body(self.message, self.type, self.code)
        handler.send_json(self.status, payload, headers=self.headers)


@dataclass(frozen=True)
class Slow(Reply):
    """Wait, then answer with ``then``: makes the client's timeout fire first."""

    seconds: float
    then: Reply

    def send(self, handler: _Handler, body: dict) -> None:
        # Wakes early when the fake stops, so stopping never waits on a slow reply.
        handler.fake.pause(self.seconds)
        self.then.send(handler, body)


@dataclass(frozen=True)
class BrokenConnection(Reply):
    """Close the socket without any response, like a dropped connection or crashed proxy."""

    def send(self, handler: _Handler, body: dict) -> None:
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)


def ok(
    content: dict | list | str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    cached_tokens: int = 0,
) -> Completion:
    """A normal answer. A dict/list is sent as its JSON text; a str is sent verbatim."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return Completion(
        content=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
    )


def refusal(text: str = "I'm sorry, I can't help with that.") -> Completion:
    """The model declines: ``message.content`` is None and ``message.refusal`` holds ``text``."""
    return Completion(content=None, refusal=text)


def malformed(content: str = MALFORMED_CONTENT) -> Completion:
    """A 200 whose content is not valid JSON, to exercise the caller's parsing failure path."""
    return Completion(content=content)


def rate_limited(
    retry_after: float | None = 1.0, *, retry_after_ms: float | None = None
) -> HttpError:
    """HTTP 429 with ``Retry-After`` (seconds; omitted when None) and optional ``retry-after-ms``.

    Note the ``openai`` client prefers ``retry-after-ms`` over ``Retry-After`` when both are sent.
    """
    headers = []
    if retry_after is not None:
        headers.append(("Retry-After", f"{retry_after:g}"))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", f"{retry_after_ms:g}"))
    return HttpError(
        status=429,
        message="Rate limit reached for requests (fake). Please try again later.",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=tuple(headers),
    )


def server_error(status: int = 500, message: str = "The server had an error (fake).") -> HttpError:
    """An HTTP 5xx with an OpenAI-style error body."""
    if not 500 <= status <= 599:
        raise ValueError(f"server_error needs a 5xx status, got {status}")
    return HttpError(status=status, message=message, type="server_error", code=None)


def slow(seconds: float, then: Reply | None = None) -> Slow:
    """Sleep ``seconds`` before sending ``then`` (default ``ok({})``)."""
    return Slow(seconds=seconds, then=then if then is not None else ok({}))


def broken_connection() -> BrokenConnection:
    """Drop the connection without answering; the client sees a connection error."""
    return BrokenConnection()


DefaultFn = Callable[[dict], Reply]


def default_reply(body: dict) -> Reply:
    """What an unscripted request gets: an empty JSON object."""
    return ok({})


def storm(
    rate: float,
    fault: Reply,
    otherwise: DefaultFn = default_reply,
    seed: int = 0,
) -> DefaultFn:
    """A default that answers ``fault`` for about ``rate`` of the calls, else ``otherwise(body)``.

    Which calls fail is drawn from ``random.Random(seed)``, so a given seed always gives the
    same sequence (call i fails iff the i-th draw is below ``rate``) and storms are repeatable.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    rng = random.Random(seed)
    lock = threading.Lock()  # concurrent requests must not interleave inside the RNG

    def choose(body: dict) -> Reply:
        with lock:
            hit = rng.random() < rate
        return fault if hit else otherwise(body)

    return choose


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    """OpenAI's error shape, which the client turns into ``exc.body``/``exc.code``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# --- the HTTP side ------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Routes the few OpenAI endpoints the app uses; everything else is a 404."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real API, so client pooling is exercised
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms to each reply.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection)

    def finish(self) -> None:
        self.fake._untrack(self.connection)
        super().finish()

    def handle(self) -> None:
        # A client that gave up (timeout) or a dropped connection must not surface as a
        # traceback from the server thread; there is simply nobody left to answer.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        raw = self._read_body()
        body = _parse_json(raw)
        path = urlsplit(self.path).path.rstrip("/") or "/"
        self.fake._record(
            RecordedRequest(
                method=self.command,
                path=path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                raw=raw,
                received_at=time.monotonic(),
            )
        )
        if (self.command, path) == ("POST", CHAT_PATH):
            self._chat_completion(body)
        elif (self.command, path) == ("GET", MODELS_PATH):
            self.send_json(200, _models_payload())
        else:
            message = f"Unknown request URL: {self.command} {path}."
            self.send_json(404, error_body(message, "invalid_request_error", "unknown_url"))

    def _chat_completion(self, body: Any) -> None:
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            self.send_json(400, error_body(message, "invalid_request_error", None))
            return
        self.fake.next_reply(body).send(self, body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(
        self, status: int, payload: dict, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fake_{self.fake.request_serial()}")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output should not fill with access logs."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck handler must never keep the test process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Disconnects are expected (timeouts, broken_connection); only report real bugs."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


def _models_payload() -> dict:
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for model_id in MODEL_IDS
        ],
    }


# --- the fake itself ----------------------------------------------------------------------------


@dataclass
class _Script:
    """Scripted replies and defaults. Only touched under ``FakeOpenAI._lock``."""

    queue: deque[Reply] = field(default_factory=deque)
    schema_queues: defaultdict[str, deque[Reply]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    schema_defaults: dict[str, DefaultFn] = field(default_factory=dict)


class FakeOpenAI:
    """A real socket server, in a daemon thread, that answers like OpenAI.

    Reply selection for a chat completion, first match wins:
    the queue for the request's schema name, the general queue, the schema's default,
    then :attr:`default`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._script = _Script()
        self._connections: set[socket.socket] = set()
        self._serial = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.default: DefaultFn = default_reply

    # lifecycle

    def start(self) -> FakeOpenAI:
        if self._server is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._stopping.clear()
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, wake slow replies, and close idle keep-alive connections."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What to pass as ``openai.OpenAI(base_url=...)`` (or ``OPENAI_BASE_URL``)."""
        return f"http://{self._address[0]}:{self.port}/v1"

    # scripting

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next chat requests with ``replies``, in order."""
        with self._lock:
            self._script.queue.extend(replies)

    def enqueue_for_schema(self, name: str, *replies: Reply) -> None:
        """Like :meth:`enqueue`, but only for requests whose json_schema name is ``name``."""
        with self._lock:
            self._script.schema_queues[name].extend(replies)

    def set_default(self, fn: DefaultFn) -> None:
        """``fn(body) -> Reply`` answers chat requests once the queues are empty."""
        with self._lock:
            self.default = fn

    def set_default_for_schema(self, name: str, fn: DefaultFn) -> None:
        """Like :meth:`set_default`, for requests whose json_schema name is ``name``."""
        with self._lock:
            self._script.schema_defaults[name] = fn

    def pending(self) -> int:
        """How many queued replies are still unused (general and per-schema queues)."""
        with self._lock:
            per_schema = sum(len(q) for q in self._script.schema_queues.values())
            return len(self._script.queue) + per_schema

    def next_reply(self, body: dict) -> Reply:
        """Pick the reply for one chat request (see the class docstring for the order)."""
        name = schema_name_of(body)
        with self._lock:
            schema_queue = self._script.schema_queues.get(name) if name else None
            if schema_queue:
                return schema_queue.popleft()
            if self._script.queue:
                return self._script.queue.popleft()
            fn = self._script.schema_defaults.get(name, self.default) if name else self.default
        # Called outside the lock: a default may be slow or take its own lock (see storm()).
        return fn(body)

    # what was received

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for_schema(self, name: str) -> list[RecordedRequest]:
        """The chat requests whose ``response_format.json_schema.name`` is ``name``."""
        return [r for r in self.requests if r.path == CHAT_PATH and r.schema_name == name]

    def count(self, path: str = CHAT_PATH) -> int:
        """How many requests hit ``path``."""
        return sum(1 for r in self.requests if r.path == path)

    def clear(self) -> None:
        """Forget recorded requests (the script is kept)."""
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        """Forget recorded requests and the whole script: queues and defaults."""
        with self._lock:
            self._requests.clear()
            self._script = _Script()
            self.default = default_reply

    def wait_for_requests(
        self, n: int, *, path: str = CHAT_PATH, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until ``n`` requests hit ``path`` (e.g. from a worker subprocess)."""

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if r.path == path]

        with self._recorded:
            if not self._recorded.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                got = len(matching())
                raise TimeoutError(f"expected {n} requests to {path} within {timeout}s, got {got}")
            return matching()

    # used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._recorded:
            self._requests.append(request)
            self._recorded.notify_all()

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def pause(self, seconds: float) -> None:
        """Sleep, but return at once if the fake is stopping."""
        self._stopping.wait(seconds)

    def request_serial(self) -> int:
        return next(self._serial)  # itertools.count is atomic under the GIL

    def next_completion_id(self) -> str:
        return f"chatcmpl-fake{self.request_serial():06d}"
