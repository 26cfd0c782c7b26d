"""The guarded download of an image URL: resolved once, every address checked, the connection
pinned to it, redirects followed hop by hop, size and time bounded."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urljoin

from django.conf import settings

from ..images import PHOTO_CONTENT_TYPES
from .errors import (
    FetchError,
    FetchHTTPError,
    FetchTimeout,
    FetchTooLarge,
    TooManyRedirects,
    URLRefused,
)
from .validation import (
    IPAddress,
    Target,
    is_localhost_name,
    normalize_address,
    parse_url,
    refusal_reason,
)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Eco2-ImageFetcher/1.0"
CHUNK = 64 * 1024


# --- fetching -----------------------------------------------------------------------------------
def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (one getaddrinfo call: the answer used to connect)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass
class FetchPolicy:
    """Limits and the seams tests use (resolver, address check)."""

    max_bytes: int
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 20.0
    max_redirects: int = 3
    allow_loopback: bool = False
    resolver: Callable[[str, int], list[IPAddress]] = system_resolver
    # (address, hop) -> reason to refuse or None; hop 0 is the URL itself, 1.. the redirects
    address_check: Callable[[IPAddress, int], str | None] | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls) -> FetchPolicy:
        return cls(
            max_bytes=settings.SCAN_IMAGE_MAX_BYTES,
            connect_timeout=settings.SCAN_FETCH_CONNECT_TIMEOUT,
            read_timeout=settings.SCAN_FETCH_READ_TIMEOUT,
            total_timeout=settings.SCAN_FETCH_TOTAL_TIMEOUT,
            max_redirects=settings.SCAN_FETCH_MAX_REDIRECTS,
            allow_loopback=settings.SCAN_FETCH_ALLOW_LOOPBACK,
        )

    def refuse(self, address: IPAddress, hop: int) -> str | None:
        if self.address_check is not None:
            return self.address_check(address, hop)
        return refusal_reason(address, allow_loopback=self.allow_loopback)


@dataclass(frozen=True)
class FetchedImage:
    content: bytes
    url: str  # the final URL, after redirects
    content_type: str
    redirects: int


def _connect_socket(address: IPAddress, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a fixed, already checked address; Host is still the name."""

    def __init__(self, host: str, port: int, *, address: IPAddress, connect_timeout: float):
        super().__init__(host, port, timeout=connect_timeout)
        self.pinned_address = address

    def connect(self) -> None:
        self.sock = _connect_socket(self.pinned_address, self.port, self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As PinnedHTTPConnection, with TLS: SNI and the certificate check use the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        address: IPAddress,
        connect_timeout: float,
        context: ssl.SSLContext,
    ):
        super().__init__(host, port, timeout=connect_timeout, context=context)
        self.pinned_address = address

    def connect(self) -> None:
        sock = _connect_socket(self.pinned_address, self.port, self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise FetchTimeout("Fetching the image took too long.")
        return remaining


def _resolve(target: Target, policy: FetchPolicy, deadline: _Deadline) -> list[IPAddress]:
    if target.literal is not None:
        return [normalize_address(target.literal)]
    if is_localhost_name(target.host):
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eco2-resolve")
    try:
        future = pool.submit(policy.resolver, target.host, target.port)
        addresses = future.result(timeout=min(policy.connect_timeout, deadline.left()))
    except FutureTimeout:
        raise FetchTimeout(f"Looking up {target.host} took too long.") from None
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"The host {target.host} could not be found ({exc}).") from None
    finally:
        pool.shutdown(wait=False)
    addresses = [normalize_address(address) for address in addresses]
    if not addresses:
        raise FetchError(f"The host {target.host} has no address.")
    return addresses


def _check_addresses(target: Target, addresses: list[IPAddress], policy, hop: int) -> None:
    for address in addresses:  # every answer, not only the one used: no mixed-record tricks
        reason = policy.refuse(address, hop)
        if reason:
            raise URLRefused(
                f"The image URL's host {target.host} points to an address that is not "
                f"allowed: {reason}."
            )


def _open(target: Target, address: IPAddress, policy: FetchPolicy) -> http.client.HTTPConnection:
    if target.scheme == "https":
        context = policy.ssl_context or ssl.create_default_context()
        return PinnedHTTPSConnection(
            target.host,
            target.port,
            address=address,
            connect_timeout=policy.connect_timeout,
            context=context,
        )
    return PinnedHTTPConnection(
        target.host, target.port, address=address, connect_timeout=policy.connect_timeout
    )


def _request(target: Target, addresses: list[IPAddress], policy: FetchPolicy, deadline):
    """Send the GET to the first address that accepts a connection; (connection, response)."""
    last_error: Exception | None = None
    for address in addresses:
        connection = _open(target, address, policy)
        connection.timeout = min(policy.connect_timeout, deadline.left())
        try:
            connection.connect()
            # http.client drops connection.sock once a "Connection: close" response arrives;
            # the body is still read from this socket, whose timeout _read_body keeps setting
            connection.pinned_sock = connection.sock
            connection.sock.settimeout(min(policy.read_timeout, deadline.left()))
            connection.putrequest("GET", target.path, skip_accept_encoding=True)
            connection.putheader("Accept", ", ".join(PHOTO_CONTENT_TYPES))
            connection.putheader("Accept-Encoding", "identity")
            connection.putheader("User-Agent", USER_AGENT)
            connection.putheader("Connection", "close")
            connection.endheaders()
            return connection, connection.getresponse()
        except TimeoutError:
            connection.close()
            raise FetchTimeout(f"{target.host} did not answer in time.") from None
        except ssl.SSLError as exc:
            connection.close()
            raise FetchError(f"A secure connection to {target.host} failed ({exc}).") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            last_error = exc
    raise FetchError(f"{target.host} could not be reached ({last_error}).")


def _read_body(connection, response, policy: FetchPolicy, deadline: _Deadline) -> bytes:
    limit = policy.max_bytes
    declared = response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise FetchTooLarge(
            f"The image at the URL is {int(declared)} bytes; the limit is {limit} bytes."
        )
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            connection.pinned_sock.settimeout(min(policy.read_timeout, deadline.left()))
            # read1: at most one recv, so the deadline is checked between small reads even
            # when a server trickles bytes (read(n) would wait for all n of them)
            chunk = response.read1(min(CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FetchTooLarge(f"The image at the URL is larger than {limit} bytes.")
    except TimeoutError:
        raise FetchTimeout("Downloading the image took too long.") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"Downloading the image failed ({exc}).") from None
    return b"".join(chunks)


def fetch_image(url: str, policy: FetchPolicy | None = None) -> FetchedImage:
    """Download an image URL safely (see the module docstring); raise FetchError."""
    policy = policy or FetchPolicy.from_settings()
    deadline = _Deadline(policy.total_timeout)
    current = url
    for hop in range(policy.max_redirects + 1):
        target = parse_url(current, check_address=False)  # addresses: policy.refuse below
        addresses = _resolve(target, policy, deadline)
        _check_addresses(target, addresses, policy, hop)
        connection, response = _request(target, addresses, policy, deadline)
        try:
            if response.status in REDIRECT_STATUSES:
                location = response.getheader("Location")
                if not location:
                    raise FetchHTTPError(
                        f"The server answered {response.status} without a Location."
                    )
                current = urljoin(current, location.strip())
                continue
            if response.status != 200:
                raise FetchHTTPError(
                    f"The server answered {response.status} {response.reason} for the image URL."
                )
            content = _read_body(connection, response, policy, deadline)
            if not content:
                raise FetchError("The image URL returned an empty file.", code="image_url_empty")
            return FetchedImage(
                content=content,
                url=current,
                content_type=response.getheader("Content-Type", ""),
                redirects=hop,
            )
        finally:
            response.close()
            connection.close()
    raise TooManyRedirects(f"The image URL redirected more than {policy.max_redirects} times.")
