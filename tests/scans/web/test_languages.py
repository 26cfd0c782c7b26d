"""The site's languages: Korean by default, the switcher and the browser's language, the
login and notification pages translated; and the static files the pages load."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.scans.web.helpers import english, logged_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("translations")]


# --- languages -------------------------------------------------------------------------------
def test_korean_is_the_default_language(user):
    page = logged_in(user).get("/scans/").content.decode()
    assert '<html lang="ko">' in page
    for text in ("새 스캔", "기록", "알림", "로그아웃", "내 스캔"):
        assert text in page


def test_the_language_switcher_sets_english(user):
    client = logged_in(user)
    page = client.get("/scans/").content.decode()
    assert 'action="/i18n/setlang/"' in page and 'name="language" value="en"' in page

    response = client.post("/i18n/setlang/", {"language": "en", "next": "/scans/"})

    assert response.status_code == 302 and response["Location"] == "/scans/"
    page = client.get("/scans/").content.decode()
    assert '<html lang="en">' in page and "Your scans" in page and "New scan" in page
    client.post("/i18n/setlang/", {"language": "ko", "next": "/"})
    assert "내 스캔" in client.get("/scans/").content.decode()


def test_the_browser_language_is_honoured_until_the_user_chooses(user):
    client = logged_in(user)
    page = client.get("/scans/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
    assert '<html lang="en">' in page


def test_the_login_and_notification_pages_are_translated(user):
    assert "로그인" in Client().get("/accounts/login/").content.decode()
    client = logged_in(user)
    korean = client.get("/settings/notifications/").content.decode()
    assert "스캔이 끝나면 이메일로 알려 주세요" in korean and "저장" in korean
    page = english(client).get("/settings/notifications/").content.decode()
    assert "E-mail me when a scan is finished" in page and "Save" in page


def test_static_files_are_served(client):
    """WhiteNoise serves the pages' CSS and scripts (also under the ASGI server)."""
    for name in ("eco2.css", "scan.js", "upload.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        response.close()
