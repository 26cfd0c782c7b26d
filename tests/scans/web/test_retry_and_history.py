"""The retry button (owner only, failed scans only, a POST with CSRF) and the history page:
the user's scans, filtered by status, category, dates and a search, paged."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from eco2 import pagination
from scans.models import (
    Scan,
    ScanStatus,
)
from tests.scans.web.helpers import completed_scan, failed_scan, logged_in, make_scan

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- the retry button ------------------------------------------------------------------------
def test_the_owner_retries_a_failed_scan(user):
    scan = failed_scan(user)
    client = logged_in(user)

    response = client.post(f"/scans/{scan.id}/retry")

    assert response.status_code == 302 and response["Location"] == f"/scans/{scan.id}/"
    scan.refresh_from_db()
    assert scan.status == ScanStatus.QUEUED and scan.retry_count == 1
    assert scan.error_code == "" and scan.finished_at is None
    assert "스캔을 다시 보냈어요." in client.get(response["Location"]).content.decode()


def test_only_the_owner_may_retry(user, other_user, staff_user):
    scan = failed_scan(user)
    for someone in (other_user, staff_user):
        assert logged_in(someone).post(f"/scans/{scan.id}/retry").status_code == 404
    anonymous = Client().post(f"/scans/{scan.id}/retry")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    scan.refresh_from_db()
    assert scan.status == ScanStatus.FAILED and scan.retry_count == 0


def test_only_failed_scans_are_retried(rulebase, user):
    done = completed_scan(user)
    waiting = make_scan(user)
    client = logged_in(user)

    for scan in (done, waiting):
        response = client.post(f"/scans/{scan.id}/retry", follow=True)
        assert response.status_code == 200
        assert "실패한 스캔만 다시 시도할 수 있어요." in response.content.decode()
    assert Scan.objects.get(pk=done.pk).status == ScanStatus.COMPLETED
    assert Scan.objects.filter(retry_count__gt=0).count() == 0


@pytest.mark.parametrize("code", ["corrupt", "unsupported_format", "image_url_refused"])
def test_a_scan_without_a_retry_button_is_not_retried(user, code):
    scan = failed_scan(user, code=code)
    client = logged_in(user)
    assert "/retry" not in client.get(f"/scans/{scan.id}/").content.decode()

    response = client.post(f"/scans/{scan.id}/retry", follow=True)

    assert (
        "다시 시도해도 같은 이유로 실패해요. 다른 사진을 올려 주세요." in response.content.decode()
    )
    scan.refresh_from_db()
    assert (scan.status, scan.retry_count, scan.error_code) == (ScanStatus.FAILED, 0, code)


def test_retry_is_a_post_with_csrf(user):
    scan = failed_scan(user)
    assert logged_in(user).get(f"/scans/{scan.id}/retry").status_code == 405
    strict = logged_in(user, enforce_csrf_checks=True)
    assert strict.post(f"/scans/{scan.id}/retry").status_code == 403
    assert Scan.objects.get(pk=scan.pk).status == ScanStatus.FAILED


# --- history -----------------------------------------------------------------------------------
@pytest.fixture
def history(rulebase, user, other_user):
    now = timezone.now()
    scans = {
        "pet": completed_scan(user),
        "can": completed_scan(user, code="metal", tags=()),
        "failed": failed_scan(user),
        "queued": make_scan(user, hint="뭔지 모를 물건"),
        "others": failed_scan(other_user),
    }
    Scan.objects.filter(pk=scans["can"].pk).update(created_at=now - timedelta(days=3))
    Scan.objects.filter(pk=scans["failed"].pk).update(created_at=now - timedelta(days=10))
    return scans


def listed(page: str) -> list[str]:
    return re.findall(r'data-scan="([0-9a-f-]+)"', page)


def test_history_lists_only_the_users_scans_with_retry_on_failed_ones(user, history):
    page = logged_in(user).get("/scans/").content.decode()

    ids = listed(page)
    assert len(ids) == 4 and str(history["others"].id) not in ids
    assert page.count("/retry") == 1 and f"/scans/{history['failed'].id}/retry" in page
    assert "무색페트병" in page and "금속류" in page and "뭔지 모를 물건" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", ["failed"]),
        ("status=completed", ["pet", "can"]),
        ("category=pet_clear", ["pet"]),
        ("category=none", ["failed", "queued"]),
        ("status=completed&category=metal", ["can"]),
    ],
)
def test_history_filters_by_status_and_category(user, history, query, expected):
    page = logged_in(user).get(f"/scans/?{query}").content.decode()
    assert sorted(listed(page)) == sorted(str(history[name].id) for name in expected)


def test_history_filters_by_date_range(user, history):
    today = timezone.localdate()
    client = logged_in(user)

    def ids(query):
        return sorted(listed(client.get(f"/scans/?{query}").content.decode()))

    def expect(*names):
        return sorted(str(history[name].id) for name in names)

    assert ids(f"date_from={today - timedelta(days=5)}") == expect("pet", "can", "queued")
    assert ids(f"date_to={today - timedelta(days=1)}") == expect("can", "failed")
    week = f"date_from={today - timedelta(days=11)}&date_to={today - timedelta(days=2)}"
    assert ids(week) == expect("can", "failed")


def test_history_searches_the_hint_and_the_category(user, history):
    client = logged_in(user)

    assert listed(client.get("/scans/?q=모를").content.decode()) == [str(history["queued"].id)]
    assert listed(client.get("/scans/?q=금속").content.decode()) == [str(history["can"].id)]
    page = client.get("/scans/?q=금속").content.decode()
    assert 'name="q"' in page and 'value="금속"' in page and "검색" in page


def test_bad_filters_are_explained_and_the_rest_still_apply(user, history):
    client = logged_in(user)

    bad_date = client.get("/scans/?status=failed&date_from=yesterday")
    backwards = client.get("/scans/?date_from=2026-05-02&date_to=2026-05-01")
    nothing = client.get("/scans/?status=processing")

    assert listed(bad_date.content.decode()) == [str(history["failed"].id)]
    assert "올바른 날짜를 입력하세요." in bad_date.content.decode()
    assert "종료일이 시작일보다 앞서요." in backwards.content.decode()
    assert "조건에 맞는 스캔이 없어요." in nothing.content.decode()


def older_and_newer(page: str) -> tuple[str | None, str | None]:
    def link(label: str) -> str | None:
        found = re.search(rf'<a href="([^"]+)">(?:‹ )?{label}', page)
        return html.unescape(found.group(1)) if found else None

    return link("이전"), link("최신")


def test_history_pages_keep_the_filters_and_go_by_position(user):
    for _ in range(21):
        failed_scan(user)
    make_scan(user)  # not failed: filtered out
    client = logged_in(user)
    first = client.get("/scans/?status=failed").content.decode()
    older, newer = older_and_newer(first)
    assert len(listed(first)) == 20 and newer is None and "스캔 21건" in first
    assert "status=failed" in older and "cursor=" in older and "page=" not in older
    second = client.get(older).content.decode()
    assert len(listed(second)) == 1 and older_and_newer(second)[0] is None
    assert set(listed(first)).isdisjoint(listed(second))
    assert listed(client.get(older_and_newer(second)[1]).content.decode()) == listed(first)


def test_a_long_history_says_more_than_the_cap_and_a_bad_cursor_is_a_404(user, monkeypatch):
    monkeypatch.setattr(pagination, "COUNT_CAP", 3)
    for _ in range(5):
        failed_scan(user)
    client = logged_in(user)
    assert "스캔 3건 이상" in client.get("/scans/").content.decode()
    assert client.get("/scans/?cursor=not-ours").status_code == 404
