"""The web experience in a real browser: Debian's Chromium, driven by Playwright, against the
ASGI server (uvicorn, as `make run` starts it) and a real Celery worker.

Log in, choose a photo (the preview appears), type the hint, press Scan, and watch the live
progress (Server-Sent Events from the async view) turn into the result card: once in Korean
(the default) on a desktop window, once in English (the language switcher) on a 390 px phone.

Needs /usr/bin/chromium (`apt-get install chromium fonts-noto-cjk`) and the playwright package
(dev extras); Playwright's own browser download is never used. Locally a missing browser skips
these tests with a message; in CI (CI=true) it fails them. Set ECO2_SCREENSHOTS=<folder> to
keep screenshots of every page.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.conftest import IN_CI, make_photo_bytes
from tests.support.live_web import serve_web
from tests.support.translations import ensure_compiled_messages

pytestmark = [pytest.mark.browser, pytest.mark.pipeline, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery"
HINT = "투명 페트병, 라벨 있음"
SHOTS = os.environ.get("ECO2_SCREENSHOTS", "")


def _browser_missing() -> str:
    problems = []
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} (apt-get install chromium fonts-noto-cjk)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package (pip install '.[dev]')")
    return ", ".join(problems)


@pytest.fixture(scope="module")
def chromium_available():
    missing = _browser_missing()
    if missing:
        message = f"browser tests need {missing}"
        if IN_CI:
            pytest.fail(message + " (CI installs them in .ci/run)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def asgi_server(chromium_available, django_db_setup, tmp_path_factory):
    """uvicorn serving eco2.asgi on a free port, on this test run's database and broker."""
    ensure_compiled_messages()
    with serve_web(tmp_path_factory.mktemp("asgi") / "uvicorn.log") as url:
        yield url


@pytest.fixture
def browser_user(user):
    # the server checks passwords with its own (default) hashers, not the tests' fast MD5
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "eco2browsersalt", iterations=1000)
    user.save(update_fields=["password"])
    return user


@contextlib.contextmanager
def browser_page(monkeypatch, *, mobile: bool):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django would refuse the ORM
    # calls the fixtures make in it. Nothing here runs concurrently with them.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        options = {"locale": "ko-KR"}
        if mobile:
            options.update(
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
        else:
            options["viewport"] = {"width": 1280, "height": 900}
        context = browser.new_context(**options)
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def shoot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def log_in(page, server: str, user) -> None:
    page.goto(f"{server}/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form:not(.lang) button[type=submit]")
    page.wait_for_url(f"{server}/")


def scan_a_photo(page, server: str, name: str) -> list[str]:
    """Choose a photo, see its preview, type the hint, press Scan, wait for the result.
    Returns the Server-Sent Events stream the page received."""
    streams: list[str] = []

    def capture(response):
        if response.url.endswith("/events"):
            with contextlib.suppress(Exception):  # the page may close it before the end
                streams.append(response.text())

    page.on("response", capture)
    page.set_input_files(
        "input[name=image]",
        files=[{"name": "bottle.jpg", "mimeType": "image/jpeg", "buffer": make_photo_bytes()}],
    )
    page.wait_for_selector("#preview img[src^='blob:']", state="visible")
    page.fill("input[name=hint]", HINT)
    shoot(page, f"{name}-upload")
    page.click("#submit")
    page.wait_for_url(f"{server}/scans/*/")
    scan_page = page.locator("#scan")
    assert scan_page.get_attribute("data-events-url").endswith("/events")
    page.wait_for_selector("#result", timeout=60_000)
    assert page.locator("#scan").get_attribute("data-status") == "completed"
    # the page marks how its progress arrived: over the event stream, not by polling
    assert page.locator("#scan").get_attribute("data-transport") == "sse", "live, not polled"
    for _ in range(50):  # the raw stream is read in Playwright's callback, after the page is done
        if streams:
            break
        page.wait_for_timeout(100)
    shoot(page, f"{name}-result")
    return streams


def no_horizontal_scroll(page) -> bool:
    """Nothing wider than the phone (a mobile browser would zoom the page out to fit it)."""
    width = page.viewport_size["width"]
    return page.evaluate(f"document.documentElement.scrollWidth <= {width}")


@pytest.fixture
def celery_worker(worker_manager):
    """A worker whose vision step pauses 1.5 s, so the page always has progress to stream
    (on RabbitMQ the whole pipeline can otherwise end before the page opens its stream)."""
    return worker_manager.ensure(FAKE_VISION_DELAY_SECONDS="1.5")


def test_korean_scan_with_live_progress(
    celery_worker, rulebase, browser_user, asgi_server, monkeypatch
):
    with browser_page(monkeypatch, mobile=False) as page:
        log_in(page, asgi_server, browser_user)
        assert page.locator("html").get_attribute("lang") == "ko"
        assert page.locator("h1").inner_text() == "무엇을 버리시나요?"

        streams = scan_a_photo(page, asgi_server, "ko-desktop")

        result = page.locator("#result")
        assert result.locator(".middle").inner_text() == "무색페트병"
        assert "재활용폐기물" in result.locator(".category").inner_text()
        assert "배출 방법" in result.inner_text()
        steps = result.locator(".steps li").all_inner_texts()
        assert steps and any("라벨" in step for step in steps)
        assert any("라벨" in fix for fix in result.locator(".fixes li").all_inner_texts())
        assert "무색페트병" in result.locator(".answer").inner_text()
        assert page.locator(".stages li.done").count() == 3
        assert page.locator("[data-field=progress]").get_attribute("style") == "width: 100%"
        if streams:  # Chromium may drop the body of a stream the page closed itself
            assert "event: progress" in streams[0] and "event: completed" in streams[0]

        page.click("a[href='/scans/']")
        assert page.locator(".history-item").count() == 1
        assert "무색페트병" in page.locator(".history-name").first.inner_text()
        shoot(page, "ko-desktop-history")


def test_english_scan_on_a_phone(celery_worker, rulebase, browser_user, asgi_server, monkeypatch):
    with browser_page(monkeypatch, mobile=True) as page:
        log_in(page, asgi_server, browser_user)
        assert page.locator("html").get_attribute("lang") == "ko", "Korean until switched"
        assert page.locator("#pick-camera").is_visible(), "a camera button on phones"

        page.click("button[name=language][value=en]")
        page.wait_for_selector("html[lang=en]")
        assert page.locator("h1").inner_text() == "What are you throwing away?"
        assert no_horizontal_scroll(page)

        scan_a_photo(page, asgi_server, "en-phone")

        result = page.locator("#result")
        assert result.locator(".middle").inner_text() == "Clear PET bottles"
        assert "How to put it out" in result.inner_text()
        assert "Peel off the plastic label." in result.locator(".fixes").inner_text()
        assert result.locator(".steps li").count() >= 3
        assert no_horizontal_scroll(page)

        page.click("a[href='/scans/']")
        assert page.locator("h1").inner_text() == "Your scans"
        assert no_horizontal_scroll(page)
        shoot(page, "en-phone-history")


def test_a_heic_photo_from_a_mac_is_not_refused_by_the_page(
    celery_worker, rulebase, browser_user, asgi_server, monkeypatch
):
    """macOS Safari hands the page an image/heic file; Chromium cannot show it, so the page
    shows its name instead of a broken preview, and the scan goes through."""
    from tests.photos import textured_photo_bytes

    with browser_page(monkeypatch, mobile=False) as page:
        log_in(page, asgi_server, browser_user)
        heic = textured_photo_bytes("HEIF", size=(480, 360))
        page.set_input_files(
            "input[name=image]",
            files=[{"name": "IMG_0042.HEIC", "mimeType": "image/heic", "buffer": heic}],
        )
        page.wait_for_selector("#preview", state="visible")
        assert page.locator("#file-error").is_hidden(), page.locator("#file-error").inner_text()
        assert page.locator("#submit").is_enabled()
        page.wait_for_selector("#preview-img", state="hidden")
        assert "IMG_0042.HEIC" in page.locator("#preview-name").inner_text()
        page.fill("input[name=hint]", HINT)
        shoot(page, "heic-upload")

        page.click("#submit")
        page.wait_for_url(f"{asgi_server}/scans/*/")
        page.wait_for_selector("#result", timeout=60_000)
        assert page.locator("#scan").get_attribute("data-status") == "completed"
        assert page.locator("#result .middle").inner_text() == "무색페트병"


def test_a_scan_that_is_not_sure_asks_and_one_tap_on_a_phone_gives_the_answer(
    celery_worker, rulebase, browser_user, asgi_server, monkeypatch
):
    """A hint the classifier is not sure of: the page does not show a guess, it asks "which
    one is it?" with one big button per item and its bin; one tap, and the page follows the
    resumed scan live to the answer, without a reload. In Korean, on a 390 px phone."""
    from tests.fakes.providers import UNSURE_HINT

    with browser_page(monkeypatch, mobile=True) as page:
        log_in(page, asgi_server, browser_user)
        page.set_input_files(
            "input[name=image]",
            files=[{"name": "bottle.jpg", "mimeType": "image/jpeg", "buffer": make_photo_bytes()}],
        )
        page.fill("input[name=hint]", f"{UNSURE_HINT} 병")
        page.click("#submit")
        page.wait_for_url(f"{asgi_server}/scans/*/")

        page.wait_for_selector("#question", timeout=60_000)
        scan = page.locator("#scan")
        assert scan.get_attribute("data-status") == "needs_input"
        assert scan.get_attribute("data-transport") == "sse", "the question came live"
        assert (
            page.locator("#question h2").inner_text()
            == "어느 쪽인가요? 사진 속 물건을 골라 주세요."
        )
        assert page.locator("[data-field=status]").inner_text() == "선택 필요"
        assert page.locator("#result").count() == 0, "no guess is shown"
        buttons = page.locator("button.choice")
        assert buttons.count() == 3
        assert buttons.nth(0).inner_text().split("\n") == ["생수병", "무색페트병"]
        for index in range(buttons.count()):
            box = buttons.nth(index).bounding_box()
            assert box["height"] >= 48 and box["width"] >= 300, "a big target for a thumb"
        assert page.locator("#more-hint").is_visible(), "a hint can be added instead"
        assert no_horizontal_scroll(page)
        shoot(page, "ko-phone-question")

        page.evaluate("window.stillTheSamePage = true")
        page.locator("button.choice[data-category=glass]").tap()

        page.wait_for_selector("#result", timeout=60_000)
        assert page.evaluate("window.stillTheSamePage === true"), "followed live, no reload"
        assert page.locator("#scan").get_attribute("data-status") == "completed"
        result = page.locator("#result")
        assert result.locator(".middle").inner_text() == "유리병"
        assert "소주병" in result.locator(".category").inner_text()
        assert result.locator(".certainty").inner_text().endswith("직접 고르셨어요")
        assert result.locator(".steps li").count() >= 1
        assert page.locator(".stages li.done").count() == 3
        assert no_horizontal_scroll(page)
        shoot(page, "ko-phone-chosen")

        page.click("a[href='/scans/']")
        assert page.locator(".history-item .status").first.inner_text() == "완료"
