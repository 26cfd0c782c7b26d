"""docker/env.example: it sets every variable compose.yaml uses, documents every setting, holds
no real secret, and the settings load from it once a SECRET_KEY is set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.deploy.helpers import ENV_EXAMPLE, ROOT, interpolate, read_env_file


@pytest.fixture(scope="module")
def referenced_variables(raw_compose, env_example) -> set[str]:
    referenced: set[str] = set()
    interpolate(raw_compose, env_example, referenced)
    return referenced


# --- env.example ----------------------------------------------------------------------------
def test_env_example_sets_every_variable_compose_references(referenced_variables, env_example):
    missing = referenced_variables - set(env_example)
    assert not missing, f"compose.yaml uses ${{…}} not set in docker/env.example: {missing}"


def test_env_example_documents_every_setting():
    _, documented = read_env_file(ENV_EXAMPLE)
    source = "".join(path.read_text() for path in sorted((ROOT / "eco2" / "settings").glob("*.py")))
    names = set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", source))
    names |= set(
        re.findall(r"environ\.get\(\"([A-Z][A-Z0-9_]*)\"", (ROOT / "flowerconfig.py").read_text())
    )
    names |= {"FLOWER_BASIC_AUTH", "PROMETHEUS_MULTIPROC_DIR"}
    missing = names - documented
    assert not missing, f"add to docker/env.example (set, or as '# NAME=default'): {missing}"


def test_env_example_is_a_production_template_without_real_secrets(env_example, services):
    assert env_example["DJANGO_ENV"] == "production"
    assert env_example["DEBUG"] == "false"
    secret_names = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|BASIC_AUTH")
    for name, value in env_example.items():
        if secret_names.search(name):
            assert value == "" or "change-me" in value, f"{name} looks like a real secret"
    database = urlsplit(env_example["DATABASE_URL"])
    assert database.hostname == "postgres" and "postgres" in services
    assert database.username == env_example["POSTGRES_USER"]
    assert unquote(database.password) == env_example["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == env_example["POSTGRES_DB"]
    assert urlsplit(env_example["REDIS_URL"]).hostname == "redis" and "redis" in services
    assert "localhost" in env_example["ALLOWED_HOSTS"].split(","), "health checks send it"


def load_settings_with(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Import eco2.settings in a fresh interpreter with exactly this environment."""
    env = {
        **env,
        "PATH": os.environ["PATH"],
        "ECO2_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    return subprocess.run(
        [sys.executable, "-c", "import eco2.settings"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_settings_refuse_the_placeholder_key_and_accept_the_rest(env_example, tmp_path):
    refused = load_settings_with(env_example, tmp_path)
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr
    with_key = {**env_example, "SECRET_KEY": "k3y-" + "x9Q2" * 16}
    accepted = load_settings_with(with_key, tmp_path)
    assert accepted.returncode == 0, accepted.stderr[-2000:]
