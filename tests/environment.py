"""Loaded as a pytest plugin (``-p tests.environment``) before Django reads its settings.

Everything a test run writes (SQLite file, broker folders, uploads, caches) goes to a fresh
temporary folder, shared with the worker subprocess, so tests never touch ``var/``.
"""

import os
import shutil
import tempfile

TEST_VAR_DIR = tempfile.mkdtemp(prefix="eco2-tests-")
os.environ["ECO2_VAR_DIR"] = TEST_VAR_DIR
for name in ("MEDIA_ROOT", "CELERY_BROKER_DIR"):
    os.environ.pop(name, None)


def pytest_unconfigure(config):
    shutil.rmtree(TEST_VAR_DIR, ignore_errors=True)
