"""Password guessing is limited (django-axes, eco2/login_guard.py) on the three ways to log in:
the API token, the login page and the admin login."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # tests/factories.py
TOKEN_URL = "/api/v1/auth/token"
KOREAN_LOCKOUT = (
    "이 계정이나 이 주소에서 로그인에 너무 많이 실패했어요. 15분 뒤에 다시 시도해 주세요."
)
ENGLISH_LOCKOUT = (
    "Too many failed log-ins for this account or from this address. Try again in 15 minutes."
)


@pytest.fixture(autouse=True)
def three_failures(settings):
    settings.AXES_FAILURE_LIMIT = 3


def token(username: str, password: str, address: str = "127.0.0.1", **extra):
    return APIClient().post(
        TOKEN_URL, {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def test_the_token_endpoint_locks_a_username_after_three_failures(user):
    first, second = token(user.username, "nope"), token(user.username, "nope")
    third = token(user.username, "nope", HTTP_ACCEPT_LANGUAGE="en")
    right = token(user.username, PASSWORD, HTTP_ACCEPT_LANGUAGE="en")

    assert (first.status_code, second.status_code) == (400, 400)
    assert third.status_code == 429, "the failure that reaches the limit is refused too"
    assert right.status_code == 429, "even with the right password"
    assert right.json() == {"detail": ENGLISH_LOCKOUT}
    assert right["Retry-After"] == "900"
    assert token(user.username, PASSWORD).json() == {"detail": KOREAN_LOCKOUT}
    # the username from anywhere, and anyone from that address
    assert token(user.username, PASSWORD, address="10.0.0.9").status_code == 429
    assert token(UserFactory().username, PASSWORD).status_code == 429


def test_another_username_from_another_address_is_not_locked(user):
    for _ in range(3):
        token(user.username, "nope")

    someone = UserFactory()
    response = token(someone.username, PASSWORD, address="10.0.0.2")

    assert response.status_code == 200 and response.json()["token"]


def test_a_token_issued_clears_the_failures_of_that_username_from_that_address(user):
    for _ in range(2):
        assert token(user.username, "nope").status_code == 400
    assert token(user.username, PASSWORD).status_code == 200

    for _ in range(2):
        assert token(user.username, "nope").status_code == 400
    assert token(user.username, PASSWORD).status_code == 200, "two failures since the success"


def test_a_success_elsewhere_does_not_clear_the_failures_of_a_username(user):
    """An attacker's own successful log-in between guesses must not reset the victim's count."""
    attacker = UserFactory()
    for _ in range(2):
        assert token(user.username, "nope", address="10.0.0.7").status_code == 400
    assert token(attacker.username, PASSWORD, address="10.0.0.7").status_code == 200

    assert token(user.username, "nope", address="10.0.0.7").status_code == 429


def log_in(client: Client, url: str, username: str, password: str, **extra):
    return client.post(url, {"username": username, "password": password}, **extra)


@pytest.mark.parametrize(
    ("url", "staff"), [("/accounts/login/", False), ("/admin/login/", True)], ids=["page", "admin"]
)
def test_the_login_pages_lock_a_username_after_three_failures(url, staff):
    someone = UserFactory(is_staff=staff)
    client = Client()

    wrong = [log_in(client, url, someone.username, "nope") for _ in range(2)]
    third = log_in(client, url, someone.username, "nope")
    right = log_in(client, url, someone.username, PASSWORD)
    english = log_in(client, url, someone.username, PASSWORD, HTTP_ACCEPT_LANGUAGE="en")

    assert [r.status_code for r in wrong] == [200, 200]  # the form again, "wrong password"
    assert third.status_code == 429
    assert right.status_code == 429 and KOREAN_LOCKOUT in right.content.decode()
    assert "_auth_user_id" not in client.session, "not logged in"
    assert english.status_code == 429 and ENGLISH_LOCKOUT in english.content.decode()
    assert right["Retry-After"] == "900"
    other = UserFactory(is_staff=staff)
    assert (
        log_in(Client(), url, other.username, PASSWORD, REMOTE_ADDR="10.0.0.3").status_code == 302
    )


def test_a_log_in_on_the_page_clears_its_failures(user):
    client = Client()
    for _ in range(2):
        assert log_in(client, "/accounts/login/", user.username, "nope").status_code == 200
    assert log_in(client, "/accounts/login/", user.username, PASSWORD).status_code == 302

    for _ in range(2):
        assert log_in(Client(), "/accounts/login/", user.username, "nope").status_code == 200
    assert log_in(Client(), "/accounts/login/", user.username, PASSWORD).status_code == 302
