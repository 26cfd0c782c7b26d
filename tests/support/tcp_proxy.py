"""A TCP proxy in front of one service, for injecting network faults in tests.

The shared PostgreSQL, RabbitMQ and Redis serve every test run on the machine: a test must
never stop or reconfigure them. Instead it points the process under test (a worker, the web)
at this proxy and breaks the path there:

- :meth:`TcpProxy.cut` drops every open connection (the peer sees its socket reset, as when a
  NAT or load balancer forgets it); new connections go through again at once.
- :meth:`TcpProxy.blackhole` models a partition: connections are accepted and whatever is sent
  is read, but nothing is forwarded and nothing ever comes back. :meth:`TcpProxy.forward` heals.
- :meth:`TcpProxy.close` stops listening: new connections are refused, open ones dropped (a
  service that is down).

Standard library only; one thread per direction of each connection, which is plenty for the
few connections of a test.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

FORWARD = "forward"
BLACKHOLE = "blackhole"


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = FORWARD
        self.accepted = 0  # connections accepted so far (every mode)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._port = 0

    @classmethod
    def for_url(cls, url: str, default_port: int) -> TcpProxy:
        """A proxy in front of the service of ``url`` (host and port from the URL)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the port a closed proxy leaves behind refuses connections, so it is kept by reopening
        listener.bind(("127.0.0.1", self._port))
        listener.listen(128)
        self._port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(
            target=self._accept_loop, args=(listener,), name=f"tcp-proxy:{self._port}", daemon=True
        ).start()
        return self

    def close(self) -> None:
        """Stop listening (new connections are refused) and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the proxy has not been started")
        return self._port

    # --- faults ------------------------------------------------------------------------------
    def cut(self) -> int:
        """Reset every open connection; return how many sockets were dropped."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _reset(sock)
        return len(sockets)

    def blackhole(self) -> None:
        """Accept and read, never forward or answer; open connections are dropped first."""
        self.mode = BLACKHOLE
        self.cut()

    def forward(self) -> None:
        """Heal: new connections reach the service again (black-holed ones stay dead)."""
        self.mode = FORWARD

    # --- plumbing ----------------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._track(client)
            if self.mode == BLACKHOLE:
                threading.Thread(target=_swallow, args=(client,), daemon=True).start()
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(upstream)
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    _reset(source)
    _reset(target)


def _swallow(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), waking any thread blocked on the socket first."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
