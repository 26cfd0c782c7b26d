"""The production settings (DJANGO_ENV=production): `check --deploy` without warnings, a
weak SECRET_KEY refused, the security values; the development defaults stay usable."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import BASE_DIR


# --- production settings ----------------------------------------------------------------------------
def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DJANGO_ENV")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**base, "PYTHONPATH": str(BASE_DIR), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {"DJANGO_ENV": "production", "ALLOWED_HOSTS": "eco2.example.com"}


def test_check_deploy_passes_without_warnings_in_production():
    result = run_manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64), **PRODUCTION,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "secret",
    [None, "eco2-insecure-development-key-set-SECRET_KEY-in-prod", "short-but-random-0123456789"],
    ids=["unset", "development key", "shorter than 50"],
)
def test_production_refuses_to_start_with_a_weak_secret_key(secret):
    env = {**PRODUCTION, **({"SECRET_KEY": secret} if secret else {})}
    result = run_manage("check", **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SECRET_KEY" in result.stderr


def test_production_settings_values():
    code = (
        "from django.conf import settings as s;"
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD,"
        " s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.SECURE_PROXY_SSL_HEADER, s.X_FRAME_OPTIONS, s.SECURE_CONTENT_TYPE_NOSNIFF,"
        " s.SECURE_REFERRER_POLICY)"
    )
    env = {
        **os.environ,
        **PRODUCTION,
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO=https",
        "DJANGO_SETTINGS_MODULE": "eco2.settings",
        "PYTHONPATH": str(BASE_DIR),
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django;django.setup();{code}"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "31536000", "True", "True", "True", "True", "True",
        "('HTTP_X_FORWARDED_PROTO',", "'https')", "DENY", "True", "same-origin",
    ]  # fmt: skip


def test_development_defaults_stay_usable():
    assert settings.SCAN_FETCH_ALLOW_LOOPBACK is False
    assert not getattr(settings, "SECURE_SSL_REDIRECT", False)
