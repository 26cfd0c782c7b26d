"""Photos given as ``image_url``: checked at request time, fetched by the worker, safely.

The URL is a user's choice of where *our* network connects, so the fetch is an SSRF
surface (OWASP: "image on external server" is the canonical case). What protects it:

* at request time (``check_image_url``): http/https only, no credentials, bounded length, a
  host that parses; a literal address in any form (``2130706433``, ``0x7f000001``,
  ``0177.0.0.1``, ``[::ffff:127.0.0.1]``) and ``localhost`` are refused at once;
* at fetch time (``fetch_image``), for the URL and every redirect hop (at most 3): the host is
  resolved **once**, **every** resolved address must be public (``refusal_reason``: loopback,
  RFC 1918, link-local and cloud metadata, CGNAT, multicast, reserved, unspecified,
  documentation and benchmarking ranges, IPv4-mapped/compatible IPv6, NAT64, 6to4 and Teredo
  with an embedded address that is refused …), and the connection is **pinned** to the checked
  address (the socket connects to the IP; Host header and TLS SNI/certificate check use the
  name), so a second DNS answer (rebinding) is never used;
* the body is streamed and stopped past ``SCAN_IMAGE_MAX_BYTES``; connect, read and total
  time are bounded; the content must then pass the same image check as an upload (the
  server's Content-Type is not trusted; the Accept header names the formats taken, HEIC and
  AVIF included, for servers that choose one by it).

Only the standard library is used (``http.client`` with a custom ``connect``). Tests inject a
resolver or an address policy through ``FetchPolicy``; ``SCAN_FETCH_ALLOW_LOOPBACK`` (tests
only) admits 127.0.0.0/8 and ::1, nothing else.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from django.conf import settings

from .errors import CodedError
from .images import PHOTO_CONTENT_TYPES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Eco2-ImageFetcher/1.0"
CHUNK = 64 * 1024


# --- errors -----------------------------------------------------------------------------------
class FetchError(CodedError):
    """The photo could not be fetched."""

    code = "image_url_unreachable"


class URLRefused(FetchError):
    code = "image_url_refused"


class FetchTooLarge(FetchError):
    code = "image_url_too_large"


class FetchTimeout(FetchError):
    code = "image_url_timeout"


class FetchHTTPError(FetchError):
    code = "image_url_http_error"


class TooManyRedirects(FetchError):
    code = "image_url_too_many_redirects"


# --- address policy ---------------------------------------------------------------------------
def _nets(*cidrs: str) -> tuple:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Written out rather than trusting ``is_global`` alone: CPython's tables were wrong before
# 3.11.10/3.12.4 (CVE-2024-4032), and this deployment may run an older patch release.
BLOCKED_V4 = {
    "this network": _nets("0.0.0.0/8"),
    "private": _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    "shared address space (CGNAT)": _nets("100.64.0.0/10"),
    "loopback": _nets("127.0.0.0/8"),
    "link-local (cloud metadata)": _nets("169.254.0.0/16"),
    "IETF protocol assignments": _nets("192.0.0.0/24"),
    "documentation": _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
    "6to4 relay anycast": _nets("192.88.99.0/24"),
    "benchmarking": _nets("198.18.0.0/15"),
    "multicast": _nets("224.0.0.0/4"),
    "reserved": _nets("240.0.0.0/4"),  # includes 255.255.255.255
}
BLOCKED_V6 = {
    "IPv4-compatible, unspecified or loopback": _nets("::/96"),
    "local-use NAT64": _nets("64:ff9b:1::/48"),
    "discard-only": _nets("100::/64"),
    "IETF protocol assignments": _nets("2001::/23"),
    "documentation": _nets("2001:db8::/32", "3fff::/20"),
    "unique local": _nets("fc00::/7"),
    "link-local": _nets("fe80::/10"),
    "site-local": _nets("fec0::/10"),
    "multicast": _nets("ff00::/8"),
}
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
NAT64_V6 = ipaddress.ip_network("64:ff9b::/96")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo client)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in NAT64_V6:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    return None


def normalize_address(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address is its IPv4 address (checked and connected to as such)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def refusal_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why Eco² must not connect to ``ip``; None if it is a public unicast address."""
    ip = normalize_address(ip)
    if allow_loopback and any(ip in net for net in LOOPBACK if net.version == ip.version):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} is a scoped (link-local) address"
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner, allow_loopback=False)
            if reason:
                return f"{ip} embeds {inner}: {reason}"
        if ip.teredo:
            server = ip.teredo[0]
            reason = refusal_reason(server, allow_loopback=False)
            if reason:
                return f"{ip} is a Teredo address with server {server}: {reason}"
        blocked = BLOCKED_V6
    else:
        blocked = BLOCKED_V4
    for label, networks in blocked.items():
        for network in networks:
            if ip in network:
                return f"{ip} is in {network} ({label})"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST_V6:
        return f"{ip} is not a global unicast address"
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    ):
        return f"{ip} is not a public address"
    return None


# --- URL checks (no network) ------------------------------------------------------------------
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_LOCALHOST_NAMES = ("localhost", "localhost.localdomain")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in *any* notation resolvers accept.

    ``inet_aton`` is what getaddrinfo applies to numeric hosts, so 2130706433, 0x7f000001,
    0177.0.0.1 and 127.1 all come out as 127.0.0.1 here as they would on the wire.
    """
    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(candidate) and candidate[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def is_localhost_name(host: str) -> bool:
    """RFC 6761: ``localhost`` and every name under it mean this machine, whatever DNS says."""
    name = host.lower().rstrip(".")
    return name in _LOCALHOST_NAMES or name.endswith(".localhost")


@dataclass(frozen=True)
class Target:
    """A checked http(s) URL, split into what the connection needs."""

    url: str
    scheme: str
    host: str  # ASCII (IDNA) host name, or the address for a literal
    port: int
    path: str  # path and query, percent-encoded, never empty
    literal: IPAddress | None


def parse_url(url: str, *, allow_loopback: bool = False, check_address: bool = True) -> Target:
    """Check a URL without touching the network; raise URLRefused with a readable reason.

    ``check_address=False`` leaves literal addresses and localhost to the caller's policy (the
    fetcher checks every address, literal or resolved, with its FetchPolicy)."""
    if not isinstance(url, str) or not url:
        raise URLRefused("The image URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise URLRefused(f"The image URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise URLRefused("The image URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise URLRefused(f"The image URL cannot be parsed ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise URLRefused("Only http:// and https:// image URLs are accepted.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise URLRefused("Image URLs with a user name or password are not accepted.")
    hostname = parts.hostname or ""
    if not hostname:
        raise URLRefused("The image URL has no host.")
    if port == 0:
        raise URLRefused("The image URL has an invalid port.")
    literal = literal_address(hostname)
    if literal is not None:
        reason = refusal_reason(literal, allow_loopback=allow_loopback) if check_address else None
        if reason:
            raise URLRefused(f"The image URL points to an address that is not allowed: {reason}.")
        host = str(normalize_address(literal))
    else:
        if check_address and not allow_loopback and is_localhost_name(hostname):
            raise URLRefused("The image URL points to this machine (localhost).")
        try:
            host = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise URLRefused("The image URL has an invalid host name.") from None
        if not host or len(host) > 253:
            raise URLRefused("The image URL has an invalid host name.")
    safe = "/%:@!$&'()*+,;=-._~"
    path = quote(parts.path or "/", safe=safe)
    if parts.query:
        path += "?" + quote(parts.query, safe=safe + "?")
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=path,
        literal=literal,
    )


def check_image_url(url: str) -> str:
    """The request-time check of ``image_url`` (serializer); raises URLRefused."""
    parse_url(url, allow_loopback=settings.SCAN_FETCH_ALLOW_LOOPBACK)
    return url


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
