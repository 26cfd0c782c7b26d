"""The deployment files (docker/, .dockerignore) checked without a Docker engine.

Nothing here builds or starts a container: CI has no engine. What can be checked is checked:
compose.yaml against the Compose Specification (the schema check-jsonschema ships, offline),
the health checks and start order, that RabbitMQ's boot-time definitions declare the queues
with exactly the arguments eco2/celery.py declares (a difference is PRECONDITION_FAILED at
the first worker start), that env.example covers every variable, the Dockerfile's shape, and
the health-check and entrypoint scripts, run here for real against /proc and a local socket.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from kombu.transport.base import to_rabbitmq_queue_arguments

from eco2.celery import app

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / "env.example"
DEFINITIONS = DOCKER / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = DOCKER / "rabbitmq" / "rabbitmq.conf"
ENTRYPOINT = DOCKER / "entrypoint.sh"

ONE_SHOT = {"migrate"}
WORKERS = {"worker-ai", "worker-default"}
APP_SERVICES = {"migrate", "web", "beat", "flower", *WORKERS}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --- helpers --------------------------------------------------------------------------------
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


def duration_seconds(text: str) -> float:
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


def command_options(command: list[str]) -> dict[str, str]:
    options = {}
    for i, arg in enumerate(command):
        if arg.startswith("--") and "=" in arg:
            key, _, value = arg.partition("=")
            options[key] = value
        elif arg in ("-Q", "-P", "-c") and i + 1 < len(command):
            options[{"-Q": "--queues", "-P": "--pool", "-c": "--concurrency"}[arg]] = command[i + 1]
    return options


def healthcheck_argv(service: dict) -> list[str]:
    test = service.get("healthcheck", {}).get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return list(test or [])


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


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def rabbitmq_password_matches(password: str, password_hash: str) -> bool:
    """rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def load_healthcheck_module():
    spec = importlib.util.spec_from_file_location(
        "eco2_docker_healthcheck", DOCKER / "healthcheck.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)[0]


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def referenced_variables(raw_compose, env_example) -> set[str]:
    referenced: set[str] = set()
    interpolate(raw_compose, env_example, referenced)
    return referenced


@pytest.fixture(scope="module")
def compose(raw_compose, env_example) -> dict:
    """compose.yaml as Compose sees it with docker/.env copied from env.example."""
    return interpolate(raw_compose, env_example, set())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def definitions() -> dict:
    return json.loads(DEFINITIONS.read_text())


@pytest.fixture(scope="module")
def broker_url(env_example):
    return urlsplit(env_example["CELERY_BROKER_URL"])


def app_queues():
    """The queues the app declares, as the pyamqp transport sends them (name → Queue)."""
    from scans.broker import DEAD_LETTER_QUEUE, PARKED_DEAD_LETTER_QUEUE

    # the configured queues: app.amqp.queues also collects any queue a test sent a task to
    queues = {queue.name: app.amqp.queues[queue.name] for queue in app.conf.task_queues}
    queues[DEAD_LETTER_QUEUE.name] = DEAD_LETTER_QUEUE
    queues[PARKED_DEAD_LETTER_QUEUE.name] = PARKED_DEAD_LETTER_QUEUE
    return queues


def declared_arguments(queue) -> dict:
    return to_rabbitmq_queue_arguments(
        queue.queue_arguments or {},
        expires=queue.expires,
        message_ttl=queue.message_ttl,
        max_length=queue.max_length,
        max_length_bytes=queue.max_length_bytes,
        max_priority=queue.max_priority,
    )


# --- compose.yaml ---------------------------------------------------------------------------
def test_compose_validates_against_the_compose_specification(compose):
    schemas = pytest.importorskip(
        "check_jsonschema.builtin_schemas.vendor", reason="check-jsonschema (dev extra)"
    )
    from importlib.resources import files

    import jsonschema

    schema = json.loads(files(schemas).joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_expected_services_exist_and_share_the_x_app_anchor(raw_compose, services):
    assert "x-app" in raw_compose, "the shared app settings are the x-app anchor"
    anchor = raw_compose["x-app"]
    expected = APP_SERVICES | {"postgres", "rabbitmq", "redis"}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"
    for name in APP_SERVICES:
        service = raw_compose["services"][name]
        for key in ("image", "build", "env_file"):
            assert service[key] == anchor[key], f"{name}.{key} does not come from x-app"
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["redis"]["image"].split(":")[1].startswith("7")


def test_every_long_running_service_has_its_own_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert healthcheck_argv(service)[0] in ("CMD", "CMD-SHELL"), name
        assert len(healthcheck_argv(service)) > 1, name


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("postgres", "pg_isready"),
        ("rabbitmq", "rabbitmq-diagnostics -q ping"),
        ("redis", "redis-cli ping"),
        ("web", "healthcheck.py http /readyz"),
        ("flower", "healthcheck.py flower"),
        ("worker-ai", "healthcheck.py worker"),
        ("worker-default", "healthcheck.py worker"),
        ("beat", "healthcheck.py process celery beat"),
    ],
)
def test_each_healthcheck_asks_the_right_question(services, service, expected):
    assert expected in " ".join(healthcheck_argv(services[service]))


def test_no_healthcheck_uses_celery_inspect_ping(services):
    """`celery inspect ping` fails under load and got healthy workers restarted (original §5)."""
    for name, service in services.items():
        command = " ".join(healthcheck_argv(service))
        assert not re.search(r"\binspect\b", command), f"{name}: {command}"
    for keyword, rest in dockerfile_instructions():
        if keyword == "HEALTHCHECK":
            assert "inspect" not in rest


def test_healthcheck_modes_used_in_compose_exist(services):
    source = (DOCKER / "healthcheck.py").read_text()
    used = 0
    for name, service in services.items():
        argv = healthcheck_argv(service)
        if "/app/docker/healthcheck.py" in argv:
            mode = argv[argv.index("/app/docker/healthcheck.py") + 1]
            assert f'mode == "{mode}"' in source, f"{name}: unknown mode {mode}"
            used += 1
    assert used >= 5
    assert load_healthcheck_module().main([]) == 2


def test_depends_on_targets_exist_with_valid_conditions(services):
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {target: {"condition": "service_started"} for target in depends_on}
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            assert condition in CONDITIONS, f"{name} → {target}: {condition}"
            if condition == "service_healthy":
                check = services[target].get("healthcheck")
                assert check and not check.get("disable"), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not one-shot"


def test_the_app_starts_after_migrations_and_healthy_backing_services(services):
    for name in ("web", "beat", *WORKERS):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        for backing in ("postgres", "rabbitmq", "redis"):
            assert depends_on[backing]["condition"] == "service_healthy", f"{name} → {backing}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]
    assert "load_rulebase --if-empty" in ENTRYPOINT.read_text()


def test_beat_runs_exactly_once(services):
    assert services["beat"]["deploy"]["replicas"] == 1
    beats = [
        name
        for name, service in services.items()
        if "beat" in (service.get("command") or [])[:1]
        or any(arg in ("-B", "--beat") for arg in service.get("command") or [])
    ]
    assert beats == ["beat"]


def test_restart_policies_and_graceful_stops(services):
    for name, service in services.items():
        expected = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, name
    soft_shutdown = app.conf.worker_soft_shutdown_timeout
    assert soft_shutdown > 0
    for name in WORKERS:
        service = services[name]
        assert duration_seconds(service["stop_grace_period"]) > soft_shutdown + 5, name
        # SIGTERM must start the soft shutdown, not Celery's unbounded warm shutdown
        assert service["environment"]["REMAP_SIGTERM"] == "SIGQUIT", name


def test_workers_consume_every_queue_the_app_declares(services):
    consumed: dict[str, set[str]] = {}
    for name in WORKERS:
        command = services[name]["command"]
        assert command[0] == "worker", name
        consumed[name] = set(command_options(command)["--queues"].split(","))
    every = set().union(*consumed.values())
    missing = {queue.name for queue in app.conf.task_queues} - every
    assert not missing, f"no worker consumes {sorted(missing)}: their tasks would never run"
    assert "scan.ai.pipeline" in consumed["worker-ai"]


def test_worker_pools_fit_their_work(services):
    ai = command_options(services["worker-ai"]["command"])
    assert ai["--pool"] == "threads" and int(ai["--concurrency"]) >= 16
    default = command_options(services["worker-default"]["command"])
    assert default["--pool"] == "prefork"
    assert {"default", "notification"} <= set(default["--queues"].split(","))


def test_named_volumes_are_declared_and_stateful_services_keep_their_data(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if source.startswith((".", "/", "~")):
                continue  # a bind mount
            assert source in declared, f"{name} uses undeclared volume {source}"
    assert any("/var/lib/postgresql/data" in v for v in services["postgres"]["volumes"])
    assert any("/var/lib/rabbitmq" in v for v in services["rabbitmq"]["volumes"])
    assert services["rabbitmq"]["hostname"], "RabbitMQ's data dir is named after its host"
    for name in ("web", *WORKERS):
        assert any(v.startswith("media:") for v in services[name]["volumes"]), name


def test_private_ports_are_published_on_loopback_only(services):
    for name in ("flower", "rabbitmq"):
        for port in services[name].get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_flower_requires_basic_auth(env_example):
    assert re.fullmatch(r"[^:,]+:[^,]+(,[^:,]+:[^,]+)*", env_example["FLOWER_BASIC_AUTH"])
    assert "FLOWER_BASIC_AUTH" in (ROOT / "flowerconfig.py").read_text()


# --- RabbitMQ -------------------------------------------------------------------------------
def test_definitions_declare_every_app_queue_with_exactly_its_arguments(definitions, broker_url):
    vhost = unquote(broker_url.path.lstrip("/")) or "/"
    declared = {(q["vhost"], q["name"]): q for q in definitions["queues"]}
    queues = app_queues()
    assert "scan.ai.pipeline" in queues and "scan.ai.dlq" in queues
    for name, queue in queues.items():
        entry = declared.get((vhost, name))
        assert entry, f"definitions.json does not declare queue {name} in vhost {vhost}"
        # exactly equal: a missing, extra (x-queue-type!) or different argument is
        # PRECONDITION_FAILED when the worker declares the queue again
        assert entry["arguments"] == declared_arguments(queue), name
        assert entry["durable"] is bool(queue.durable), name
        assert entry["auto_delete"] is bool(queue.auto_delete), name


def test_the_pipeline_queue_dead_letters_exactly_as_the_app_says(definitions):
    pipeline = next(q for q in definitions["queues"] if q["name"] == "scan.ai.pipeline")
    queue = app.amqp.queues["scan.ai.pipeline"]
    assert pipeline["arguments"] == queue.queue_arguments
    assert pipeline["arguments"] == {
        "x-dead-letter-exchange": "scan.ai.dlx",
        "x-dead-letter-routing-key": "scan.ai.dlq",
    }


def test_definitions_declare_exchanges_and_bindings_like_the_app(definitions, broker_url):
    from scans.broker import DEAD_LETTER_QUEUE
    from scans.outbox import EVENTS_EXCHANGE

    vhost = unquote(broker_url.path.lstrip("/")) or "/"
    exchanges = {(e["vhost"], e["name"]): e for e in definitions["exchanges"]}
    bindings = {
        (b["vhost"], b["source"], b["destination"], b["routing_key"])
        for b in definitions["bindings"]
        if b["destination_type"] == "queue"
    }
    expected = [q.exchange for q in app_queues().values()] + [EVENTS_EXCHANGE]
    for exchange in (e for e in expected if e.name):  # "": RabbitMQ's default exchange
        entry = exchanges.get((vhost, exchange.name))
        assert entry, f"exchange {exchange.name} is not declared"
        assert entry["type"] == exchange.type, exchange.name
        assert entry["durable"] is bool(exchange.durable), exchange.name
        assert entry["auto_delete"] is bool(exchange.auto_delete), exchange.name
        assert not entry.get("internal") and entry.get("arguments", {}) == {}
    for queue in (q for q in app_queues().values() if q.exchange.name):
        assert (vhost, queue.exchange.name, queue.name, queue.routing_key) in bindings
    assert exchanges[(vhost, "scan.ai.dlx")]["type"] == "direct"
    assert DEAD_LETTER_QUEUE.exchange.name == "scan.ai.dlx"
    assert exchanges[(vhost, "eco2.events")]["type"] == "topic"


def test_no_queue_type_is_set_on_the_vhost_or_the_queues(definitions):
    """Classic queues, and nothing that would make RabbitMQ store an x-queue-type the app does
    not send (a vhost default_queue_type does that on some versions)."""
    for vhost in definitions["vhosts"]:
        assert "default_queue_type" not in vhost
        assert "default_queue_type" not in vhost.get("metadata", {})
    for queue in definitions["queues"]:
        assert "x-queue-type" not in queue["arguments"], queue["name"]
        assert queue.get("type", "classic") == "classic"


def test_the_broker_url_logs_in_with_a_user_of_the_definitions(definitions, broker_url):
    vhost = unquote(broker_url.path.lstrip("/")) or "/"
    assert broker_url.hostname == "rabbitmq"
    assert vhost in {v["name"] for v in definitions["vhosts"]}
    user = next(u for u in definitions["users"] if u["name"] == broker_url.username)
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert rabbitmq_password_matches(unquote(broker_url.password), user["password_hash"])
    assert "administrator" not in user["tags"], "the app's user needs no admin rights"
    permission = next(
        p for p in definitions["permissions"] if p["user"] == user["name"] and p["vhost"] == vhost
    )
    assert all(permission[k] for k in ("configure", "write", "read"))


def test_rabbitmq_conf_imports_the_mounted_definitions_and_states_consumer_timeout(services):
    conf = {}
    for line in RABBITMQ_CONF.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            conf[key.strip()] = value.strip()
    mounts = {}
    for volume in services["rabbitmq"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    assert conf["definitions.import_backend"] == "local_filesystem"
    assert mounts[conf["definitions.local.path"]].endswith("rabbitmq/definitions.json")
    assert any(
        t.startswith("/etc/rabbitmq/") and s == "./rabbitmq/rabbitmq.conf"
        for t, s in mounts.items()
    )
    app.loader.import_default_modules()
    longest = max((task.time_limit or 0) for task in app.tasks.values())
    assert int(conf["consumer_timeout"]) / 1000 > 10 * max(longest, 60)


# --- env.example ----------------------------------------------------------------------------
def test_env_example_sets_every_variable_compose_references(referenced_variables, env_example):
    missing = referenced_variables - set(env_example)
    assert not missing, f"compose.yaml uses ${{…}} not set in docker/env.example: {missing}"


def test_env_example_documents_every_setting():
    _, documented = read_env_file(ENV_EXAMPLE)
    source = (ROOT / "eco2" / "settings.py").read_text()
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


# --- Dockerfile and build context -----------------------------------------------------------
def test_dockerfile_is_multi_stage_with_a_slim_runtime():
    stages = dockerfile_stages()
    assert len(stages) >= 2
    args = dict(
        rest.split("=", 1)
        for keyword, rest in dockerfile_instructions()
        if keyword == "ARG" and "=" in rest
    )
    runtime_from = stages[-1][0][1].split()[0]
    runtime_image = args.get(runtime_from.strip("${}"), runtime_from)
    assert runtime_image == "python:3.11-slim"
    builder = " ".join(rest for _, rest in stages[0])
    assert "collectstatic" in builder and "compilemessages" in builder and "gettext" in builder
    assert "pyproject.toml" in builder


def test_the_runtime_stage_runs_unprivileged_without_build_tools():
    runtime = dockerfile_stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "gettext", "pip install"):
        assert tool not in runs, f"the runtime stage installs {tool}"
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies and all("--from=" in rest for rest in copies), "runtime copies build results"


def test_dockerfile_has_a_python_healthcheck_an_entrypoint_and_a_default_role():
    runtime = dict(dockerfile_stages()[-1])
    healthcheck = runtime["HEALTHCHECK"]
    assert "/healthz" in healthcheck and "python" in healthcheck and "curl" not in healthcheck
    assert json.loads(runtime["ENTRYPOINT"]) == ["/app/docker/entrypoint.sh"]
    assert json.loads(runtime["CMD"]) == ["web"]


def test_the_image_healthcheck_command_works(tmp_path):
    """Run the Dockerfile's HEALTHCHECK one-liner against a local server: 200 → 0, 503 → 1."""
    healthcheck = dict(dockerfile_stages()[-1])["HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"]
    status = {"code": 200}
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Host"]))
            self.send_response(status["code"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PORT": str(server.server_address[1])}
    try:
        ok = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
        status["code"] = 503
        down = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert ok.returncode == 0, ok.stderr
    assert down.returncode != 0
    assert seen[0] == ("/healthz", "localhost")


def test_no_env_file_reaches_the_image():
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            assert ".env" not in rest.split(), rest
            assert not re.search(r"(^|[\s/])\.env\b", rest), rest
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", "**/.env", ".git", ".venv", "var/"} <= ignored


# --- docker/entrypoint.sh (run with stand-ins for python and celery) -----------------------
@pytest.fixture
def fake_bin(tmp_path):
    for tool in ("python", "celery", "uvicorn"):
        script = tmp_path / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $* REMAP_SIGTERM=${{REMAP_SIGTERM:-}}"\n')
        script.chmod(0o755)
    return tmp_path


def run_entrypoint(fake_bin, tmp_path, *args) -> str:
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "CELERY_STATE_DIR": str(tmp_path / "state"),
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_entrypoint_is_executable_and_valid_sh():
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


def test_entrypoint_web_role_serves_the_asgi_app(fake_bin, tmp_path):
    out = run_entrypoint(fake_bin, tmp_path, "web")
    assert out.startswith("uvicorn eco2.asgi:application --host 0.0.0.0 --port 8000")
    assert "--proxy-headers" in out and "--timeout-graceful-shutdown" in out


def test_entrypoint_worker_role_soft_shuts_down_on_sigterm(fake_bin, tmp_path):
    out = run_entrypoint(fake_bin, tmp_path, "worker", "--queues=scan.ai.pipeline")
    assert out.startswith("celery -A eco2 worker")
    assert "--queues=scan.ai.pipeline" in out and "--statedb=" in out
    assert out.endswith("REMAP_SIGTERM=SIGQUIT")
    assert run_entrypoint(fake_bin, tmp_path, "beat").startswith("celery -A eco2 beat")
    assert run_entrypoint(fake_bin, tmp_path, "flower").startswith("celery -A eco2 flower")
    assert run_entrypoint(fake_bin, tmp_path, "echo", "any", "command") == "any command"


# --- docker/healthcheck.py ------------------------------------------------------------------
def test_http_check_sends_an_allowed_host_and_needs_2xx():
    health = load_healthcheck_module()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers["Host"])
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()
            self.wfile.write(b'{"status": "fail"}')

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert health.check_http("/readyz", port, "localhost") is None
        problem = health.check_http("/other", port, "localhost")
        assert "503" in problem and "fail" in problem
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["localhost", "localhost"]
    assert health.check_http("/readyz", port, "localhost") is not None  # nothing listens


def test_broker_ports_come_from_the_broker_url():
    health = load_healthcheck_module()
    assert health.broker_ports("amqp://u:p@rabbitmq:5672/eco2") == {5672}
    assert health.broker_ports("amqp://u:p@rabbitmq/eco2") == {5672}
    assert health.broker_ports("amqps://rabbitmq//") == {5671}
    assert health.broker_ports("amqp://a:5673//;amqp://b:5674//") == {5673, 5674}
    assert health.broker_ports("filesystem://localhost//") == set()


def test_worker_check_reads_a_proc_tree(tmp_path):
    """A fake /proc: a worker (pid 4711) whose socket inode 4242 is ESTABLISHED to port 5672."""
    health = load_healthcheck_module()
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"

    def row(sl: int, local_port: str, state: str, inode: int) -> str:
        # 192.168.0.2:<local_port> → 192.168.0.3:5672 (0x1628)
        zeros = "00000000:00000000 00:00000000 00000000"
        return f"{sl:4}: 0200A8C0:{local_port} 0300A8C0:1628 {state} {zeros} 10001 0 {inode} 1\n"

    (proc / "net" / "tcp").write_text(
        header + row(0, "C350", "01", 4242) + row(1, "C351", "08", 4343)
    )
    (proc / "net" / "tcp6").write_text(header)
    worker = proc / "4711"
    (worker / "fd").mkdir(parents=True)
    (worker / "cmdline").write_bytes(
        b"/opt/venv/bin/python\0/opt/venv/bin/celery\0-A\0eco2\0worker\0"
    )
    (worker / "stat").write_text("4711 (celery) S 1 4711 4711 0 -1")
    url = "amqp://eco2:pw@rabbitmq:5672/eco2"

    assert "no ESTABLISHED connection" in health.check_worker(url, proc=proc)
    (worker / "fd" / "3").symlink_to("socket:[4343]")  # CLOSE_WAIT: the broker hung up
    assert "no ESTABLISHED connection" in health.check_worker(url, proc=proc)
    (worker / "fd" / "4").symlink_to("socket:[4242]")
    assert health.check_worker(url, proc=proc) is None
    assert health.check_worker("amqp://eco2:pw@rabbitmq:5673/eco2", proc=proc) is not None

    # with setproctitle installed, Celery retitles its processes: still found
    (worker / "cmdline").write_bytes(
        b"[celeryd: ai@c0ffee:MainProcess] -active- (worker --queues=scan.ai.pipeline)\0"
    )
    assert health.check_worker(url, proc=proc) is None

    (worker / "stat").write_text("4711 (celery) Z 1 4711 4711 0 -1")  # a zombie is not a worker
    assert "no running `celery worker`" in health.check_worker(url, proc=proc)
    assert health.check_worker(url, process_only=True, proc=proc) is not None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_worker_check_sees_a_real_connection():
    health = load_healthcheck_module()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = (
        "import socket, sys, time\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "print('connected', flush=True)\n"
        "time.sleep(30)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code, str(port), "celery", "worker"],
        stdout=subprocess.PIPE,
        text=True,
    )
    idle = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "celery", "worker"]
    )
    try:
        assert worker.stdout.readline().strip() == "connected"
        pids = health.find_process(["celery", "worker"])
        assert {worker.pid, idle.pid} <= set(pids)
        assert health.connected_to([worker.pid], {port})
        assert not health.connected_to([idle.pid], {port})
        assert health.check_worker(f"amqp://u:p@127.0.0.1:{port}//") is None
    finally:
        for process in (worker, idle):
            process.kill()
            process.wait()
        listener.close()


# --- make check-deploy ----------------------------------------------------------------------
def test_make_check_deploy_runs_these_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^check-deploy:", makefile, re.M)
    assert "tests/deploy/" in makefile
