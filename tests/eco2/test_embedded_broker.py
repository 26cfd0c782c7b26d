"""The embedded broker (eco2/embedded_broker.py): kombu's filesystem transport with its files
written whole, so a consumer never reads a message still being written (which stopped the
worker) and concurrent binds keep every binding."""

import logging
import multiprocessing
import os
import tempfile
from pathlib import Path
from queue import Empty

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.transport.virtual import BrokerState

from eco2 import embedded_broker
from eco2.celery import app

EMBEDDED = "eco2.embedded_broker:Transport"


@pytest.fixture
def folders(tmp_path, monkeypatch) -> dict[str, str]:
    # kombu keeps declared bindings per process (a class attribute): a fresh state, so each
    # test's broker folder gets its own tables
    monkeypatch.setattr(embedded_broker.Transport, "global_state", BrokerState())
    options = {"polling_interval": 0.01}
    for key, name in (
        ("data_folder_in", "queue"),
        ("data_folder_out", "queue"),
        ("control_folder", "control"),
        ("processed_folder", "processed"),
    ):
        (tmp_path / name).mkdir(exist_ok=True)
        options[key] = str(tmp_path / name)
    return options


def connect(options: dict[str, str]) -> Connection:
    return Connection("filesystem://localhost//", transport=EMBEDDED, transport_options=options)


def test_the_embedded_profile_runs_this_transport():
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the real-services pass runs RabbitMQ")
    with app.connection_for_write() as conn:
        assert f"{type(conn.transport).__module__}:{type(conn.transport).__name__}" == EMBEDDED


def _publish(options: dict[str, str], worker: int, count: int, size: int) -> None:
    with connect(options) as conn:
        producer = conn.Producer(serializer="json")
        for n in range(count):
            producer.publish(
                {"id": f"{worker}-{n}", "pad": "x" * size}, routing_key="jobs", exchange=""
            )


def test_a_consumer_racing_four_publishers_gets_every_message_whole(folders):
    """The stock transport creates the file before writing it: a consumer racing it read an
    empty file and its JSON error stopped the whole worker, the message lost."""
    workers, count = 4, 10
    fork = multiprocessing.get_context("fork")
    publishers = [
        fork.Process(target=_publish, args=(folders, worker, count, 4_000_000))
        for worker in range(workers)
    ]
    received: set[str] = set()
    with connect(folders) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        for process in publishers:
            process.start()
        while len(received) < workers * count:
            message = queue.get(timeout=30)
            assert message.payload["pad"] == "x" * 4_000_000
            received.add(message.payload["id"])
            message.ack()
        queue.close()
    for process in publishers:
        process.join(10)
        assert process.exitcode == 0
    assert len(received) == workers * count


def test_an_unreadable_message_file_is_dropped_and_the_next_one_delivered(folders, caplog):
    # an empty file of an older writer, sorted first in the queue folder
    empty = embedded_broker.message_file_name("jobs", sent_at_us=1)
    open(f"{folders['data_folder_in']}/{empty}", "wb").close()
    with connect(folders) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        queue.put({"id": "after"})
        with caplog.at_level(logging.ERROR, logger="eco2.embedded_broker"):
            message = queue.get(timeout=5)
        queue.close()
    assert message.payload == {"id": "after"}
    assert "dropped an unreadable message file of queue jobs" in caplog.text


def test_messages_are_delivered_in_the_order_they_were_sent(folders, monkeypatch):
    """kombu names files by unpadded milliseconds, so 10.000 s sorted before 9.999 s."""
    with connect(folders) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        for n, sent_at_us in enumerate((999_999, 9_999_000, 10_000_000, 100_000_000)):
            monkeypatch.setattr(embedded_broker, "time_ns", lambda at=sent_at_us: at * 1000)
            queue.put({"n": n})
        received = []
        for _ in range(4):
            message = queue.get(timeout=5)
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    assert received == [0, 1, 2, 3]


def test_a_message_is_taken_off_its_queue_inside_the_broker_folder(folders, monkeypatch):
    """kombu moved each message to the system temp folder before reading it: with that
    folder on another file system (or not writable) the move is a copy, or nothing."""
    monkeypatch.setattr(tempfile, "tempdir", str(Path(folders["data_folder_in"]) / "missing"))
    with connect(folders) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        queue.put({"id": "one"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"id": "one"}
    assert os.listdir(folders["data_folder_in"]) == []


def test_a_message_whose_consumer_died_after_claiming_it_is_delivered_again(
    folders, monkeypatch, caplog
):
    with connect(folders) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        queue.put({"id": "claimed by a consumer that was killed"})
        [name] = os.listdir(folders["data_folder_in"])
        # what the consumer's claim left behind: the rename happened, the read never did
        folder = Path(folders["data_folder_in"])
        os.rename(folder / name, folder / f".{name}.claimed")

        with pytest.raises(Empty):  # a fresh claim belongs to a consumer that may be reading
            queue.get(timeout=0.2)
        monkeypatch.setattr(embedded_broker.Channel, "CLAIM_STALE_SECONDS", 0.0)
        with caplog.at_level(logging.WARNING, logger="eco2.embedded_broker"):
            message = queue.get(timeout=5)
        message.ack()
        queue.close()

    assert message.payload == {"id": "claimed by a consumer that was killed"}
    assert "claimed and never read; it is back on the queue" in caplog.text
    assert os.listdir(folder) == []


def _drain(options: dict[str, str], barrier, received) -> None:
    barrier.wait()
    with connect(options) as conn:
        queue = conn.SimpleQueue("jobs", serializer="json")
        while True:
            try:
                message = queue.get(timeout=0.5)
            except Empty:
                break
            received.put(message.payload["id"])
            message.ack()
        queue.close()


def test_consumers_racing_for_one_queue_each_get_a_message_once(folders):
    count, consumers = 200, 4
    _publish(folders, worker=0, count=count, size=16)
    fork = multiprocessing.get_context("fork")
    barrier, received = fork.Barrier(consumers), fork.Queue()
    processes = [
        fork.Process(target=_drain, args=(folders, barrier, received)) for _ in range(consumers)
    ]
    for process in processes:
        process.start()
    ids = [received.get(timeout=30) for _ in range(count)]
    for process in processes:
        process.join(timeout=30)
    assert sorted(ids) == sorted(f"0-{n}" for n in range(count))
    assert received.empty()


BROADCASTS = [Exchange(f"broadcast-{n}", type="fanout") for n in range(40)]


def _bind(options: dict[str, str], name: str, barrier) -> None:
    with connect(options) as conn:
        barrier.wait(10)
        for exchange in BROADCASTS:
            Queue(name, exchange)(conn.default_channel).declare()


def test_queues_bound_at_the_same_moment_all_receive_a_broadcast(folders):
    """Workers starting together bind their queues to Celery's fanout exchanges (revoke,
    shutdown): the stock transport's tables lost bindings or were left unreadable, which
    failed the next publish or bind."""
    names = [f"worker-{n}" for n in range(8)]
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(len(names))
    binders = [fork.Process(target=_bind, args=(folders, name, barrier)) for name in names]
    for process in binders:
        process.start()
    for process in binders:
        process.join(30)
        assert process.exitcode == 0
    with connect(folders) as conn:
        for exchange in BROADCASTS:
            bound = {entry.queue for entry in conn.default_channel.get_table(exchange.name)}
            assert bound == set(names), exchange.name
        conn.Producer(serializer="json").publish({"command": "revoke"}, exchange=BROADCASTS[0])
        for name in names:
            queue = conn.SimpleQueue(name, serializer="json", no_ack=True)
            assert queue.get(timeout=5).payload == {"command": "revoke"}, name
            queue.close()


def test_a_deleted_queue_leaves_the_other_bindings(folders):
    exchange = BROADCASTS[0]
    with connect(folders) as conn:
        channel = conn.default_channel
        kept, dropped = Queue("kept", exchange)(channel), Queue("dropped", exchange)(channel)
        kept.declare()
        dropped.declare()
        dropped.delete()
        assert [entry.queue for entry in channel.get_table(exchange.name)] == ["kept"]
