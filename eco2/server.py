"""The web server: ``python -m eco2.server [uvicorn options]``, uvicorn's own CLI with one fix.

With ``--workers N`` uvicorn binds the listening socket itself (``Config.bind_socket``) with
``proto`` left at 0. Accepted connections inherit it, and asyncio only sets ``TCP_NODELAY`` on
sockets that report ``IPPROTO_TCP``, so Nagle's algorithm stays on: every keep-alive request
after a connection's first waits ~40 ms for the client's delayed ACK before the response
body leaves (uvicorn issue #3149, open in 0.54). Found by bench/api_latency.py, where it made
a trivial view cost 56 ms. Declaring the protocol on the same file descriptor fixes it; this
module goes away once uvicorn does it.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.config import Config

_uvicorn_bind_socket = Config.bind_socket


def bind_socket(config: Config) -> socket.socket:
    """uvicorn's listening socket, declared as TCP so accepted connections get TCP_NODELAY."""
    sock = _uvicorn_bind_socket(config)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock


Config.bind_socket = bind_socket  # type: ignore[method-assign]


def main() -> None:
    uvicorn.main(prog_name="python -m eco2.server")


if __name__ == "__main__":
    main()
