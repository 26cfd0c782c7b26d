"""``image_url``: the SSRF battery (request time and fetch time, with a canary listener that
must never be reached), the fetcher's limits, and real fetches through a Celery worker."""

from __future__ import annotations

import contextlib
import ipaddress
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from scans import fetch, services
from scans.fetch import FetchPolicy, fetch_image, literal_address, refusal_reason
from scans.models import Scan, ScanStatus
from tests.conftest import make_photo_bytes, wait_for_scan
from tests.photos import photo_bytes

SCANS_URL = "/api/v1/scans"
PHOTO = make_photo_bytes("JPEG", size=(320, 240))
TWENTY_MB = 20 * 1024 * 1024


# --- local servers ------------------------------------------------------------------------------
class Canary:
    """A TCP listener on 127.0.0.1 standing in for an internal service: any connection to it
    is a successful SSRF."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.hits: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.hits.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def canary_listener():
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture
def canary(canary_listener):
    canary_listener.hits.clear()
    return canary_listener


class ImageHandler(BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.requests.append((parts.path, self.headers.get("Host")))
        self.server.accept_headers.append(self.headers.get("Accept", ""))
        name = parts.path.strip("/").split("/")[0]
        route = getattr(self, "route_" + name.replace("-", "_").replace(".", "_"), None)
        if route is None:
            self.send_error(404)
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(parts)

    def _send(self, status: int, body: bytes, content_type: str, length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_photo_jpg(self, parts) -> None:
        self._send(200, PHOTO, "image/jpeg")

    def route_photo_heic(self, parts) -> None:  # many servers do not know HEIC's type
        self._send(200, photo_bytes("HEIF", size=(320, 240)), "application/octet-stream")

    def route_photo_avif(self, parts) -> None:
        self._send(200, photo_bytes("AVIF", size=(320, 240)), "image/avif")

    def route_page(self, parts) -> None:
        self._send(200, b"<!doctype html><title>not a photo</title>", "text/html")

    def route_big_declared(self, parts) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(TWENTY_MB))
        self.end_headers()
        self._stream(TWENTY_MB)

    def route_big_stream(self, parts) -> None:  # no Content-Length: ends when the server closes
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self._stream(TWENTY_MB)

    def _stream(self, total: int) -> None:
        chunk = PHOTO[:3] + b"\x00" * (64 * 1024 - 3)
        sent = 0
        while sent < total:
            self.wfile.write(chunk)
            sent += len(chunk)

    def route_slow(self, parts) -> None:  # a trickle that never trips a per-read timeout
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for _ in range(100):
            self.wfile.write(b"\x00")
            self.wfile.flush()
            time.sleep(0.1)

    def route_redirect(self, parts) -> None:
        target = parse_qs(parts.query)["to"][0]
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_chain(self, parts) -> None:
        hops = int(parts.path.rstrip("/").rsplit("/", 1)[1])
        self.send_response(302)
        self.send_header("Location", f"/chain/{hops - 1}" if hops > 1 else "/photo.jpg")
        self.send_header("Content-Length", "0")
        self.end_headers()


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still trickling bytes must not hold up the teardown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ImageHandler)
        self.requests: list[tuple[str, str]] = []
        self.accept_headers: list[str] = []
        self.port = self.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def image_server():
    server = ImageServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(image_server):
    image_server.requests.clear()
    image_server.accept_headers.clear()
    return image_server


def loopback_policy(**overrides) -> FetchPolicy:
    return FetchPolicy(**{"max_bytes": 10 * 1024 * 1024, "allow_loopback": True, **overrides})


def strict_policy(**overrides) -> FetchPolicy:
    return FetchPolicy(**{"max_bytes": 10 * 1024 * 1024, "allow_loopback": False, **overrides})


# --- the battery ------------------------------------------------------------------------------------
# {port} is the canary's: were any of these fetched, the canary would see the connection.
BATTERY = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST:{port}/",
    "http://sub.localhost:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::127.0.0.1]:{port}/",  # IPv4-compatible
    "http://2130706433:{port}/",  # decimal
    "http://0x7f000001:{port}/",  # hex
    "http://0177.0.0.1:{port}/",  # octal
    "http://0x7f.0.0.1:{port}/",
    "http://127.1:{port}/",  # short form
    "http://017700000001:{port}/",
    "http://10.0.0.1:{port}/",
    "http://172.16.0.1:{port}/",
    "http://192.168.1.1:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS IMDS over IPv6 (unique local)
    "http://100.64.0.1:{port}/",  # CGNAT
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    "http://[::]:{port}/",
    "http://[fe80::1]:{port}/",
    "http://[fe80::1%25eth0]:{port}/",
    "http://[fc00::1]:{port}/",
    "http://[2002:7f00:1::1]:{port}/",  # 6to4 embedding 127.0.0.1
    "http://[2002:a00:1::1]:{port}/",  # 6to4 embedding 10.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]:{port}/",  # Teredo, client 10.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://224.0.0.1:{port}/",
    "http://255.255.255.255:{port}/",
    "http://198.18.0.1:{port}/",
    "http://192.0.2.1:{port}/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_SLAVEOF%20attacker",
    "ftp://example.com/photo.jpg",
    "dict://127.0.0.1:{port}/info",
    "javascript:alert(1)",
    "data:image/jpeg;base64,/9j/4AAQ",
    "http://user:pass@example.com/photo.jpg",
    "http://user@example.com/photo.jpg",
    "https://example.com:99999/photo.jpg",
    "http:///photo.jpg",
    "http://exa mple.com/photo.jpg",
    "http://example.com/\r\nHost: 127.0.0.1",
]


def test_the_canary_does_notice_a_connection(canary):
    """So its silence in the battery means something."""
    with pytest.raises(fetch.FetchError):
        fetch_image(f"http://127.0.0.1:{canary.port}/", loopback_policy(connect_timeout=1))
    deadline = time.monotonic() + 2
    while not canary.hits and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(canary.hits) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("template", BATTERY)
def test_the_battery_is_refused_at_request_time(api_client, canary, template):
    url = template.format(port=canary.port)
    response = api_client.post(SCANS_URL, {"image_url": url}, format="json")

    assert response.status_code == 400, (url, response.content)
    assert "image_url" in response.json()
    assert Scan.objects.count() == 0
    assert canary.hits == []


@pytest.mark.parametrize("template", BATTERY)
def test_the_battery_is_refused_by_the_fetcher_too(canary, template):
    """Defence in depth: the worker re-checks every URL (the row could have been edited)."""
    with pytest.raises(fetch.URLRefused) as refused:
        fetch_image(template.format(port=canary.port), strict_policy(connect_timeout=1))
    assert refused.value.code == "image_url_refused"
    time.sleep(0.05)
    assert canary.hits == []


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """socket.getaddrinfo answering from ``answers``; returns the names looked up."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        infos = []
        for address in answers[host]:
            ip = ipaddress.ip_address(address)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sockaddr = (address, port) if ip.version == 4 else (address, port, 0, 0)
            infos.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_resolving_to_loopback_is_refused_before_connecting(canary, monkeypatch):
    fake_dns(monkeypatch, {"photos.example.com": ["127.0.0.1"]})
    with pytest.raises(fetch.URLRefused, match=r"127\.0\.0\.1"):
        fetch_image(f"http://photos.example.com:{canary.port}/a.jpg", strict_policy())
    assert canary.hits == []


def test_every_resolved_address_must_be_public(canary, monkeypatch):
    fake_dns(monkeypatch, {"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(fetch.URLRefused, match=r"127\.0\.0\.1"):
        fetch_image(f"http://mixed.example.com:{canary.port}/a.jpg", strict_policy())
    assert canary.hits == []


@pytest.mark.parametrize("address", ["::ffff:127.0.0.1", "::ffff:169.254.169.254", "fd00::1"])
def test_resolved_ipv6_forms_are_normalised_and_refused(canary, monkeypatch, address):
    fake_dns(monkeypatch, {"v6.example.com": [address]})
    with pytest.raises(fetch.URLRefused):
        fetch_image(f"http://v6.example.com:{canary.port}/", strict_policy())
    assert canary.hits == []


def test_the_connection_is_pinned_to_the_checked_address_with_the_original_host(
    served, monkeypatch
):
    """Resolved once; the socket goes to that address; Host still names the site. A second
    lookup (DNS rebinding) would answer the canary's loopback address: it must not happen."""
    asked = fake_dns(monkeypatch, {"cdn.example.com": ["127.0.0.1"]})
    fetched = fetch_image(f"http://cdn.example.com:{served.port}/photo.jpg", loopback_policy())

    assert fetched.content == PHOTO
    assert asked == ["cdn.example.com"]
    assert served.requests == [("/photo.jpg", f"cdn.example.com:{served.port}")]


def first_hop_loopback_only(address, hop):
    """The test's allow-list: loopback (the image server) on the first hop, nothing after."""
    if hop == 0 and address.is_loopback:
        return None
    return refusal_reason(address)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{canary}/",
        "http://localhost:{canary}/",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:10.0.0.1]/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{canary}/_x",
    ],
)
def test_a_redirect_to_an_internal_address_is_refused(served, canary, target):
    location = target.format(canary=canary.port)
    policy = strict_policy(address_check=first_hop_loopback_only)
    with pytest.raises(fetch.URLRefused):
        fetch_image(f"{served.base}/redirect?to={location}", policy)
    assert [path for path, _ in served.requests] == ["/redirect"]
    time.sleep(0.05)
    assert canary.hits == []


def test_at_most_three_redirects(served):
    assert fetch_image(f"{served.base}/chain/3", loopback_policy()).redirects == 3
    with pytest.raises(fetch.TooManyRedirects) as error:
        fetch_image(f"{served.base}/chain/4", loopback_policy())
    assert error.value.code == "image_url_too_many_redirects"


@pytest.mark.parametrize("route", ["big-declared", "big-stream"])
def test_a_body_over_the_limit_is_stopped(served, route):
    started = time.monotonic()
    with pytest.raises(fetch.FetchTooLarge) as error:
        fetch_image(f"{served.base}/{route}", loopback_policy(max_bytes=1024 * 1024))
    assert error.value.code == "image_url_too_large"
    assert time.monotonic() - started < 5


def test_a_trickling_server_is_cut_off_by_the_total_deadline(served):
    started = time.monotonic()
    with pytest.raises(fetch.FetchTimeout) as error:
        fetch_image(f"{served.base}/slow", loopback_policy(read_timeout=0.5, total_timeout=1.0))
    assert error.value.code == "image_url_timeout"
    assert time.monotonic() - started < 3


def test_http_errors_and_closed_ports_fail_with_codes(served):
    with pytest.raises(fetch.FetchHTTPError) as error:
        fetch_image(f"{served.base}/missing", loopback_policy())
    assert error.value.code == "image_url_http_error"

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(fetch.FetchError) as error:
        fetch_image(f"http://127.0.0.1:{closed_port}/", loopback_policy(connect_timeout=1))
    assert error.value.code == "image_url_unreachable"


def test_an_unknown_host_is_unreachable(monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(fetch.FetchError) as error:
        fetch_image("https://no-such-host.example/a.jpg", strict_policy())
    assert error.value.code == "image_url_unreachable"


# --- the address table ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.31.255.255", "192.168.0.1",
        "169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.8",
        "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1", "192.88.99.1",
        "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::7f00:1", "64:ff9b::a00:1",
        "64:ff9b:1::1", "100::1", "2001:db8::1", "2001::1", "2002:7f00:1::", "2002:c0a8:1::",
        "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "3fff::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address):
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address):
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_only_by_the_test_flag():
    loopback = ipaddress.ip_address("127.0.0.1")
    assert refusal_reason(loopback) is not None
    assert refusal_reason(loopback, allow_loopback=True) is None
    assert refusal_reason(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("017700000001", "127.0.0.1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"), ("[::1]", "::1"),
        ("example.com", None), ("1e100.net", None), ("cafe.babe", None), ("123.example", None),
    ],
)  # fmt: skip
def test_literal_addresses_in_every_notation(host, expected):
    found = literal_address(host)
    assert (str(found) if found else None) == expected


# --- through the scan pipeline ------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_name_resolving_inside_fails_the_scan_with_image_url_refused(
    api_client, canary, monkeypatch
):
    """Accepted at request time (a host name), refused at fetch time: the scan fails with the
    code through the pipeline's own failure handler, and the canary saw nothing."""
    from scans.ledger import fail_pipeline_task
    from scans.tasks import vision_scan_task

    url = f"http://intranet.example.com:{canary.port}/photo.jpg"
    response = api_client.post(SCANS_URL, {"image_url": url}, format="json")
    assert response.status_code == 202
    scan = Scan.objects.get(pk=response.json()["task_id"])
    fake_dns(monkeypatch, {"intranet.example.com": ["127.0.0.1"]})

    with pytest.raises(services.ScanStepError) as error:
        services.ensure_prepared_image(scan)
    fail_pipeline_task(
        sender=vision_scan_task, task_id="t-1", exception=error.value, args=(str(scan.id),)
    )

    scan.refresh_from_db()
    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "image_url_refused")
    assert "127.0.0.1" in scan.error_message  # the detail, for staff
    korean = api_client.get(f"{SCANS_URL}/{scan.id}", HTTP_ACCEPT_LANGUAGE="ko").json()["error"]
    assert korean["message"].startswith("Eco²는 이 주소에서 사진을 가져오지 않아요.")
    assert "127.0.0.1" not in korean["message"] and "detail" not in korean
    assert canary.hits == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/photo.jpg",
        "http://10.1.2.3/photo.jpg",
        "http://localhost/photo.jpg",
        "ftp://example.com/photo.jpg",
        "http://user:pass@example.com/photo.jpg",
    ],
)
def test_a_refused_address_is_explained_in_the_requests_language(api_client, url):
    korean = api_client.post(
        SCANS_URL, {"image_url": url}, format="json", HTTP_ACCEPT_LANGUAGE="ko"
    )
    english = api_client.post(
        SCANS_URL, {"image_url": url}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )

    assert (korean.status_code, english.status_code) == (400, 400)
    assert korean.json()["image_url"] == [
        "Eco²는 이 주소에서 사진을 가져오지 않아요. 공개된 http:// 또는 https:// 주소만 쓸 수 있어요."
    ]
    assert english.json()["image_url"] == [
        "Eco² does not fetch photos from this address: only public http:// and https:// "
        "addresses are allowed."
    ]


def test_step_errors_keep_their_code_through_celerys_pickling():
    """Celery pickles a failed task's exception before the failure handler sees it."""
    from scans.images import UnusablePhoto
    from scans.providers.base import ProviderError, TransientProviderError

    error = pickle.loads(pickle.dumps(services.ScanStepError("refused", code="image_url_refused")))
    assert (type(error), error.code, error.message) == (
        services.ScanStepError,
        "image_url_refused",
        "refused",
    )
    error = pickle.loads(pickle.dumps(fetch.FetchTooLarge("too big")))
    assert (type(error), error.code, error.message) == (
        fetch.FetchTooLarge,
        "image_url_too_large",
        "too big",
    )
    error = pickle.loads(pickle.dumps(UnusablePhoto("damaged", code="corrupt")))
    assert (error.code, error.message, str(error)) == ("corrupt", "damaged", "damaged")
    assert isinstance(error, ValueError)
    error = pickle.loads(pickle.dumps(ProviderError("refused", code="provider_refused")))
    assert (error.code, error.message, error.retryable) == ("provider_refused", "refused", False)
    error = pickle.loads(pickle.dumps(TransientProviderError("slow down", retry_after=7.0)))
    assert (error.code, error.retry_after, error.retryable) == ("provider_unavailable", 7.0, True)


@pytest.mark.django_db
def test_fetched_content_passes_the_upload_check(served, user, settings):
    settings.SCAN_FETCH_ALLOW_LOOPBACK = True
    scan = services.create_scan(owner=user, image_url=f"{served.base}/page")
    with pytest.raises(services.ScanStepError) as error:
        services.ensure_prepared_image(scan)
    assert error.value.code == "unsupported_format"


@pytest.fixture
def fetching_worker(worker_manager, rulebase, settings):
    settings.SCAN_FETCH_ALLOW_LOOPBACK = True  # request-time check, in this process
    return worker_manager.ensure(SCAN_FETCH_ALLOW_LOOPBACK="1")


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_photo_by_url_completes_through_a_real_worker(fetching_worker, api_client, served):
    response = api_client.post(
        SCANS_URL,
        {"image_url": f"{served.base}/photo.jpg", "hint": "투명 페트병, 라벨 있음"},
        format="json",
    )
    assert response.status_code == 202, response.content

    scan = wait_for_scan(response.json()["task_id"], timeout=60)

    assert scan.status == ScanStatus.COMPLETED, (scan.error_code, scan.error_message)
    assert scan.image_prepared_at and scan.image_sha256
    assert scan.category.code == "pet_clear"
    assert ("/photo.jpg", f"127.0.0.1:{served.port}") in served.requests


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_twenty_megabytes_by_url_fail_the_scan_as_too_large(fetching_worker, api_client, served):
    response = api_client.post(SCANS_URL, {"image_url": f"{served.base}/big-stream"}, format="json")
    assert response.status_code == 202

    scan = wait_for_scan(response.json()["task_id"], timeout=60)

    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "image_url_too_large")
    assert "larger than" in scan.error_message


@pytest.mark.pipeline
@pytest.mark.django_db(transaction=True)
def test_a_redirect_inside_fails_the_scan_through_a_real_worker(
    fetching_worker, api_client, served
):
    target = "http://169.254.169.254/latest/meta-data/"
    response = api_client.post(
        SCANS_URL, {"image_url": f"{served.base}/redirect?to={target}"}, format="json"
    )
    scan = wait_for_scan(response.json()["task_id"], timeout=60)
    assert (scan.status, scan.error_code) == (ScanStatus.FAILED, "image_url_refused")


@pytest.mark.django_db
@pytest.mark.parametrize("extension", ["heic", "avif"])
def test_a_heic_or_avif_photo_by_url_is_asked_for_and_prepared(served, user, settings, extension):
    """The fetch says it takes HEIC and AVIF (servers that negotiate send them), and what
    arrives is judged by its content, not by the Content-Type the server chose."""
    settings.SCAN_FETCH_ALLOW_LOOPBACK = True
    scan = services.create_scan(owner=user, image_url=f"{served.base}/photo.{extension}")

    prepared = services.ensure_prepared_image(scan)

    assert prepared[:3] == b"\xff\xd8\xff"
    scan.refresh_from_db()
    assert (scan.image.width, scan.image.height) == (320, 240)
    (accept,) = served.accept_headers
    assert {"image/heic", "image/heif", "image/avif", "image/jpeg"} <= {
        kind.strip() for kind in accept.split(",")
    }
