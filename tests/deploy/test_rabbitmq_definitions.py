"""RabbitMQ's boot-time definitions (docker/rabbitmq/) declare the queues, exchanges and
bindings with exactly the arguments the app declares (a difference is PRECONDITION_FAILED at the
first worker start), in both queue types: definitions.json for CELERY_QUEUE_TYPE=classic,
definitions.quorum.json for quorum (eco2/broker_queues.py); and the broker URL's user logs in."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote, urlsplit

import pytest
from kombu.transport.base import to_rabbitmq_queue_arguments

from eco2.broker_queues import CLASSIC, DEFAULT_DELIVERY_LIMIT, QUORUM, task_queues
from eco2.celery import app
from tests.deploy.helpers import DOCKER

DEFINITIONS = DOCKER / "rabbitmq" / "definitions.json"
QUORUM_DEFINITIONS = DOCKER / "rabbitmq" / "definitions.quorum.json"
FILES = {CLASSIC: DEFINITIONS, QUORUM: QUORUM_DEFINITIONS}
RABBITMQ_CONF = DOCKER / "rabbitmq" / "rabbitmq.conf"


@pytest.fixture(scope="module")
def definitions() -> dict:
    return json.loads(DEFINITIONS.read_text())


@pytest.fixture(scope="module", params=[CLASSIC, QUORUM])
def mode(request) -> tuple[str, dict]:
    """(queue type, its definitions file), for the tests that hold in both."""
    return request.param, json.loads(FILES[request.param].read_text())


def vhost_of(queue_type: str, definitions: dict, broker_url) -> str:
    if queue_type == CLASSIC:
        return unquote(broker_url.path.lstrip("/")) or "/"
    (vhost,) = definitions["vhosts"]  # quorum: a vhost of its own (the migration needs both)
    assert vhost["name"] != "eco2", "quorum queues cannot share the classic vhost"
    return vhost["name"]


@pytest.fixture(scope="module")
def broker_url(env_example):
    return urlsplit(env_example["CELERY_BROKER_URL"])


def app_queues(queue_type: str = CLASSIC):
    """The queues the app declares in ``queue_type`` with the default delivery limit (the one
    docker/env.example keeps), name → Queue."""
    from scans.broker import DEAD_LETTER_QUEUE, PARKED_DEAD_LETTER_QUEUE

    queues = {queue.name: queue for queue in task_queues(queue_type, DEFAULT_DELIVERY_LIMIT)}
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


def rabbitmq_password_matches(password: str, password_hash: str) -> bool:
    """rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


# --- RabbitMQ -------------------------------------------------------------------------------
def test_the_test_process_declares_the_classic_queues_it_checks():
    assert [q.name for q in app.conf.task_queues] == [q.name for q in task_queues(CLASSIC)]
    for queue in app.conf.task_queues:
        expected = next(q for q in task_queues(CLASSIC) if q.name == queue.name)
        assert queue.queue_arguments == expected.queue_arguments
        assert queue.exchange.type == expected.exchange.type == "direct"


def test_definitions_declare_every_app_queue_with_exactly_its_arguments(mode, broker_url):
    queue_type, definitions = mode
    vhost = vhost_of(queue_type, definitions, broker_url)
    declared = {(q["vhost"], q["name"]): q for q in definitions["queues"]}
    queues = app_queues(queue_type)
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


def test_on_quorum_every_consumed_queue_has_a_delivery_limit_and_dead_letters():
    definitions = json.loads(QUORUM_DEFINITIONS.read_text())
    by_name = {q["name"]: q for q in definitions["queues"]}
    for name in ("scan.ai.pipeline", "scan.image", "notification", "default"):
        assert by_name[name]["arguments"] == {
            "x-queue-type": "quorum",
            "x-delivery-limit": DEFAULT_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "scan.ai.dlx",
            "x-dead-letter-routing-key": "scan.ai.dlq",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }, name
    # read with basic.get and put back: a quorum DLQ would count that as deliveries
    for name in ("scan.ai.dlq", "scan.ai.dlq.parked"):
        assert by_name[name]["arguments"] == {}, name
    exchanges = {e["name"]: e["type"] for e in definitions["exchanges"]}
    assert {
        exchanges[n] for n in ("scan.ai.pipeline", "scan.image", "notification", "default")
    } == {"topic"}, (
        "Celery's native delayed delivery (countdown retries on quorum queues) needs topic"
    )


def test_definitions_declare_exchanges_and_bindings_like_the_app(mode, broker_url):
    from scans.broker import DEAD_LETTER_QUEUE
    from scans.outbox import EVENTS_EXCHANGE

    queue_type, definitions = mode
    vhost = vhost_of(queue_type, definitions, broker_url)
    exchanges = {(e["vhost"], e["name"]): e for e in definitions["exchanges"]}
    bindings = {
        (b["vhost"], b["source"], b["destination"], b["routing_key"])
        for b in definitions["bindings"]
        if b["destination_type"] == "queue"
    }
    expected = [q.exchange for q in app_queues(queue_type).values()] + [EVENTS_EXCHANGE]
    for exchange in (e for e in expected if e.name):  # "": RabbitMQ's default exchange
        entry = exchanges.get((vhost, exchange.name))
        assert entry, f"exchange {exchange.name} is not declared"
        assert entry["type"] == exchange.type, exchange.name
        assert entry["durable"] is bool(exchange.durable), exchange.name
        assert entry["auto_delete"] is bool(exchange.auto_delete), exchange.name
        assert not entry.get("internal") and entry.get("arguments", {}) == {}
    for queue in (q for q in app_queues(queue_type).values() if q.exchange.name):
        assert (vhost, queue.exchange.name, queue.name, queue.routing_key) in bindings
    assert exchanges[(vhost, "scan.ai.dlx")]["type"] == "direct"
    assert DEAD_LETTER_QUEUE.exchange.name == "scan.ai.dlx"
    assert exchanges[(vhost, "eco2.events")]["type"] == "topic"


def test_no_queue_type_is_set_on_the_vhost_or_the_queues(definitions):
    """Classic queues, and nothing that would make RabbitMQ store an x-queue-type the app does
    not send (a vhost default_queue_type does that on some versions)."""
    quorum = json.loads(QUORUM_DEFINITIONS.read_text())
    for vhost in definitions["vhosts"] + quorum["vhosts"]:
        assert "default_queue_type" not in vhost
        assert "default_queue_type" not in vhost.get("metadata", {})
    for queue in definitions["queues"]:
        assert "x-queue-type" not in queue["arguments"], queue["name"]
        assert queue.get("type", "classic") == "classic"


def test_the_broker_url_logs_in_with_a_user_of_the_definitions(mode, broker_url):
    queue_type, definitions = mode
    vhost = vhost_of(queue_type, definitions, broker_url)
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
