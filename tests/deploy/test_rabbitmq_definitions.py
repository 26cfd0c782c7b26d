"""RabbitMQ's boot-time definitions (docker/rabbitmq/) declare the queues, exchanges and
bindings with exactly the arguments eco2/celery.py declares (a difference is
PRECONDITION_FAILED at the first worker start), and the broker URL's user logs in."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote, urlsplit

import pytest
from kombu.transport.base import to_rabbitmq_queue_arguments

from eco2.celery import app
from tests.deploy.helpers import DOCKER

DEFINITIONS = DOCKER / "rabbitmq" / "definitions.json"
RABBITMQ_CONF = DOCKER / "rabbitmq" / "rabbitmq.conf"


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


def rabbitmq_password_matches(password: str, password_hash: str) -> bool:
    """rabbit_password_hashing_sha256: base64(salt[4] + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


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
