"""The web as it runs in production, for tests that need its real behaviour over HTTP: uvicorn
serving eco2.asgi in a subprocess (the response is sent before after-response work runs, each
request has its own thread, the Procfile's connection pool), on this test run's database."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from ..conftest import BASE_DIR, subprocess_env
from .processes import stop


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_web(log_path: Path, **env: str) -> Iterator[str]:
    """Run uvicorn with ``env`` over the test environment (the Procfile's DB_POOL_MAX_SIZE=8
    unless given); yield its base URL, stop it afterwards."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "eco2.asgi:application", "--host", "127.0.0.1",
        "--port", str(port), "--lifespan", "off", "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=subprocess_env(**{"DB_POOL_MAX_SIZE": "8", **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"uvicorn did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        stop(process)


@dataclass
class WebResponse:
    status_code: int
    headers: Message
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class WebClient:
    """A keep-alive HTTP client with a cookie jar (standard library and Django's multipart
    encoder only): ``files`` are sent as multipart/form-data, ``data`` alone as a form."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.headers = headers or {}
        self.cookies: dict[str, str] = {}
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def get(self, path: str, **kwargs: Any) -> WebResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> WebResponse:
        return self.request("POST", path, **kwargs)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: dict | None = None,
        files: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> WebResponse:
        headers = {**self.headers, **(headers or {})}
        body = None
        if files:
            body = encode_multipart(BOUNDARY, {**(data or {}), **files})
            headers["Content-Type"] = MULTIPART_CONTENT
        elif data is not None:
            body = urlencode(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        text = response.read().decode(errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return WebResponse(response.status, response.headers, text)

    def close(self) -> None:
        self._connection.close()
