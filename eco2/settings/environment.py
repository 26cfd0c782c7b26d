"""Where the settings come from: the environment (and a ``.env`` file beside manage.py, which never
overrides it), the checkout's folder, and the folder everything the embedded profile writes to."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Everything the embedded profile writes (SQLite file, broker folders, uploads) lives here.
VAR_DIR = Path(env.str("ECO2_VAR_DIR", default=str(BASE_DIR / "var")))
