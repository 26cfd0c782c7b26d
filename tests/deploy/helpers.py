"""What the deployment-file tests share: where docker/'s files are, reading env.example,
Compose's variable interpolation, the Dockerfile's instructions and loading
docker/healthcheck.py."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / "env.example"
ENTRYPOINT = DOCKER / "entrypoint.sh"


def read_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """(variables set, every name documented: set or as a "# NAME=" comment)."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if not match:
            continue
        documented.add(match[2])
        if not match[1]:
            values[match[2]] = match[3]
    return values, documented


_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_]\w*))")


def interpolate(value, env: dict[str, str], referenced: set[str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error}, $VAR and $$ interpolation."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, referenced) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, referenced) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name = match[1] or match[4]
        referenced.add(name)
        current = env.get(name)
        operator, argument = match[2], match[3] or ""
        unset = current is None or (operator and operator.startswith(":") and current == "")
        if operator in ("-", ":-"):
            return argument if unset else current
        if operator in ("?", ":?"):
            if unset:
                raise AssertionError(f"{name} is required by compose.yaml: {argument}")
            return current
        if operator in ("+", ":+"):
            return "" if unset else argument
        return current or ""

    return _VARIABLE.sub(substitute, value)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def load_healthcheck_module():
    spec = importlib.util.spec_from_file_location(
        "eco2_docker_healthcheck", DOCKER / "healthcheck.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
