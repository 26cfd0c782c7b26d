"""The project's message catalogues for tests that read translated text: compiled from
locale/*/django.po when a .mo is missing or older, then Django's cached catalogues dropped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.test.signals import setting_changed

LOCALE_DIR = Path(settings.BASE_DIR) / "locale"


def ensure_compiled_messages() -> None:
    """Compile locale/*/django.po when the .mo is missing or older (`make test` does this
    too; a bare `pytest` should not depend on it), then drop Django's cached catalogues."""
    stale = []
    for po in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/django.po")):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            stale.append((po, mo))
    if not stale:
        return
    if shutil.which("msgfmt") is None:
        pytest.fail("msgfmt is missing: install gettext (apt-get install gettext)")
    for po, mo in stale:
        subprocess.run(["msgfmt", "--check-format", "-o", str(mo), str(po)], check=True)
    setting_changed.send(
        sender=None, setting="LOCALE_PATHS", value=settings.LOCALE_PATHS, enter=False
    )
