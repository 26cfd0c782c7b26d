"""Fixtures of the deployment-file tests: env.example's values and compose.yaml as Compose
reads it (interpolated with docker/.env copied from env.example)."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.helpers import COMPOSE_FILE, ENV_EXAMPLE, interpolate, read_env_file


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)[0]


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose, env_example) -> dict:
    """compose.yaml as Compose sees it with docker/.env copied from env.example."""
    return interpolate(raw_compose, env_example, set())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]
