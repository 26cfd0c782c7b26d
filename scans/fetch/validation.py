"""What an image URL may point to, checked without touching the network: the URL's form, its
host, and the reason an address is refused (private, loopback, metadata, embedded …)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

from .errors import URLRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")


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
