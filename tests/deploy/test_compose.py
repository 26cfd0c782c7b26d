"""docker/compose.yaml checked without a Docker engine: valid against the Compose
Specification (the schema check-jsonschema ships, offline), health checks, start order,
restarts and graceful stops, queues consumed, volumes and ports."""

from __future__ import annotations

import json
import re

import pytest

from eco2.celery import app
from tests.deploy.helpers import (
    DOCKER,
    ENTRYPOINT,
    ROOT,
    dockerfile_instructions,
    load_healthcheck_module,
)

ONE_SHOT = {"migrate"}
WORKERS = {"worker-ai", "worker-default"}
APP_SERVICES = {"migrate", "web", "beat", "flower", *WORKERS}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


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
    # a supported major (3.13's community support ended in 2024), pinned to its patch release
    assert services["rabbitmq"]["image"] == "rabbitmq:4.2.5-management"
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
