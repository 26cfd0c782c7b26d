"""The rule base's alias embeddings for the tests, computed once before any test.

~6,000 aliases take minutes to embed on a fresh checkout; paid inside a test (or by a worker
subprocess that a test's timeout kills before it saves them) that looks like a hung scan. The
test session computes them at its start if they are missing; `make test` computes them before
its two passes run side by side, so that they are not computed twice at once:
``python -m tests.support.embeddings``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def embed_aliases_once() -> None:
    """Fill SCAN_EMBEDDING_CACHE (set by tests/environment.py) if it is not there yet:
    ``load_rulebase`` on a scratch SQLite database embeds the aliases, as `make run` does."""
    cache = Path(os.environ["SCAN_EMBEDDING_CACHE"])
    if cache.exists():
        return
    with tempfile.TemporaryDirectory(prefix="eco2-embeddings-") as scratch:
        env = {
            **os.environ,
            "ECO2_VAR_DIR": scratch,
            "DATABASE_URL": f"sqlite:///{Path(scratch) / 'db.sqlite3'}",
            "PYTHONPATH": str(BASE_DIR),
        }
        for command in (["migrate", "--noinput", "-v0"], ["load_rulebase"]):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=BASE_DIR, env=env, check=True,
                capture_output=True, timeout=900,
            )  # fmt: skip


if __name__ == "__main__":
    from tests import environment  # the test runs' settings: where the cache lives

    try:
        embed_aliases_once()
    finally:
        environment.pytest_unconfigure(None)  # its scratch folder
