"""Fixtures shared by the tests of scans/: the compiled translations pages and API answers
are read in."""

from __future__ import annotations

import pytest
from django.utils import translation

from tests.support.translations import ensure_compiled_messages


@pytest.fixture
def translations():
    """The catalogues compiled; no language left active in this thread afterwards."""
    ensure_compiled_messages()
    yield
    translation.deactivate()  # requests activate a language in this thread; leave none behind
