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

from .download import (
    CHUNK,
    REDIRECT_STATUSES,
    USER_AGENT,
    FetchedImage,
    FetchPolicy,
    PinnedHTTPConnection,
    PinnedHTTPSConnection,
    fetch_image,
    system_resolver,
)
from .errors import (
    FetchError,
    FetchHTTPError,
    FetchTimeout,
    FetchTooLarge,
    TooManyRedirects,
    URLRefused,
)
from .validation import (
    ALLOWED_SCHEMES,
    BLOCKED_V4,
    BLOCKED_V6,
    GLOBAL_UNICAST_V6,
    LOOPBACK,
    MAX_URL_LENGTH,
    NAT64_V6,
    IPAddress,
    Target,
    check_image_url,
    embedded_ipv4,
    is_localhost_name,
    literal_address,
    normalize_address,
    parse_url,
    refusal_reason,
)

__all__ = [
    "ALLOWED_SCHEMES",
    "BLOCKED_V4",
    "BLOCKED_V6",
    "CHUNK",
    "GLOBAL_UNICAST_V6",
    "LOOPBACK",
    "MAX_URL_LENGTH",
    "NAT64_V6",
    "REDIRECT_STATUSES",
    "USER_AGENT",
    "FetchError",
    "FetchHTTPError",
    "FetchPolicy",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchedImage",
    "IPAddress",
    "PinnedHTTPConnection",
    "PinnedHTTPSConnection",
    "Target",
    "TooManyRedirects",
    "URLRefused",
    "check_image_url",
    "embedded_ipv4",
    "fetch_image",
    "is_localhost_name",
    "literal_address",
    "normalize_address",
    "parse_url",
    "refusal_reason",
    "system_resolver",
]
