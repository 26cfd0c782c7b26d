"""The Celery configuration the pipeline's guarantees rest on."""

from types import SimpleNamespace

import pytest
from django_celery_results.backends.database import DatabaseBackend

from eco2.celery import _no_prefetch_reduction_on_threaded_pools, app
from scans.tasks import STEP_TASKS


def test_only_json_is_accepted_on_the_wire():
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]


def test_scan_tasks_route_to_the_pipeline_queue_and_notifications_to_theirs():
    router = app.amqp.router
    for name in ("scans.tasks.vision_scan", "scans.tasks.rule_match", "scans.tasks.answer_gen"):
        assert router.route({}, name)["queue"].name == "scan.ai.pipeline"
    assert router.route({}, "notifications.tasks.send_email")["queue"].name == "notification"
    # CPU-bound photo preparation has its own queue, for a prefork worker
    assert router.route({}, "scans.tasks.prepare_image")["queue"].name == "scan.image"


def test_the_services_publish_by_the_names_the_tasks_are_registered_under():
    """The services build their signatures by name (they do not import the task module): each
    name they publish is a registered task, and the step names are the step tasks'."""
    from notifications.services.outbox import SEND_EMAIL
    from scans.services import STEP_TASK_NAMES
    from scans.services.dispatch import AGGREGATE_AFTER_ERROR, AGGREGATE_RESULTS
    from scans.services.photos import REGENERATE_THUMBNAIL

    assert {step: task.name for step, task in STEP_TASKS.items()} == STEP_TASK_NAMES
    for name in (AGGREGATE_RESULTS, AGGREGATE_AFTER_ERROR, REGENERATE_THUMBNAIL, SEND_EMAIL):
        assert name in app.tasks, name


def test_delivery_settings_are_at_least_once():
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_retry_delay == 60 and conf.task_max_retries == 3
    assert conf.result_extended and conf.task_track_started
    # django-celery-results' table (the task history), through its backend
    assert isinstance(app.backend, DatabaseBackend)
    # pipeline steps leave their start to the attempt ledger (one write instead of three)
    assert not any(task.track_started for task in STEP_TASKS.values())
    assert conf.timezone == "Asia/Seoul"


def test_the_pipeline_queue_dead_letters_to_the_dlq():
    queue = next(q for q in app.conf.task_queues if q.name == "scan.ai.pipeline")
    assert queue.queue_arguments["x-dead-letter-routing-key"] == "scan.ai.dlq"


@pytest.mark.parametrize(
    ("pool", "reduced"), [("threads", False), ("gevent", False), ("prefork", True)]
)
def test_threaded_pools_keep_their_prefetch_count_after_a_reconnect(pool, reduced):
    """The reduction's restoring basic_qos runs on the acking pool thread and deadlocked the
    worker's event loop (tests/integration/chaos/test_network_faults.py); prefork acks from its loop."""
    from celery.concurrency import get_implementation

    conf = SimpleNamespace(worker_enable_prefetch_count_reduction=True, worker_pool="prefork")
    options = {"pool": get_implementation(pool), "pool_cls": None}  # as the worker CLI passes it
    _no_prefetch_reduction_on_threaded_pools(sender="w@host", conf=conf, options=options)
    assert conf.worker_enable_prefetch_count_reduction is reduced


def test_the_threads_pool_does_not_enforce_time_limits():
    """What docs/reliability.md ("Time limits") states: the threads pool that runs the AI steps
    hands soft and hard time limits to nothing. A job far over both runs to its end, so on that
    pool the OpenAI client's timeout is what bounds a step."""
    import threading
    import time

    from celery.concurrency.thread import TaskPool

    finished = threading.Event()

    def slow_step():
        time.sleep(0.6)
        finished.set()

    pool = TaskPool(limit=1)
    pool.start()
    try:
        pool.apply_async(slow_step, soft_timeout=0.1, timeout=0.2)
        assert finished.wait(5), "a time limit stopped the job"
    finally:
        pool.stop()
    assert STEP_TASKS["vision"].soft_time_limit == 60, "the limit the docs say is not enforced"


def test_a_worker_that_runs_the_offline_matcher_loads_the_analyser_before_forking(
    monkeypatch, settings
):
    from scans.rules.morphology import analyser
    from scans.worker_start import (
        _load_the_korean_analyser_before_the_pool_starts as on_worker_init,
    )

    loaded = []
    monkeypatch.setattr(analyser, "warm_analyser", lambda: loaded.append(True))

    def worker(*queues):
        return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(
            queues=SimpleNamespace(consume_from=dict.fromkeys(queues))
        )))  # fmt: skip

    settings.SCAN_VISION_PROVIDER = "scans.providers.offline.OfflineVisionProvider"
    on_worker_init(sender=worker("scan.image"))  # the photo worker does not match text
    assert loaded == []
    on_worker_init(sender=worker("scan.image", "scan.ai.pipeline"))
    assert loaded == [True]
    # a provider of its own that reads only the hint (the tests' fake) runs the matcher too
    settings.SCAN_VISION_PROVIDER = "tests.fakes.providers.FailingOnRequestVisionProvider"
    on_worker_init(sender=worker("scan.ai.pipeline"))
    assert loaded == [True, True]

    settings.SCAN_VISION_PROVIDER = "scans.providers.openai.OpenAIVisionProvider"
    on_worker_init(sender=worker("scan.ai.pipeline"))  # OpenAI names the category itself
    assert loaded == [True, True]


def _settings_with(**env: str):
    """Import the settings in a fresh interpreter with ``env``: (return code, stderr)."""
    import os
    import subprocess
    import sys

    from tests.conftest import BASE_DIR

    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'eco2.settings'; django.setup()\n"
        "from eco2.celery import app\n"
        "print([(q.name, q.exchange.type, (q.queue_arguments or {}).get('x-queue-type')) "
        "for q in app.conf.task_queues])"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_classic_queues_on_direct_exchanges_are_the_default():
    assert {q.exchange.type for q in app.conf.task_queues} == {"direct"}
    assert not any((q.queue_arguments or {}).get("x-queue-type") for q in app.conf.task_queues)


def test_quorum_is_refused_on_the_embedded_broker_and_an_unknown_type_is_refused():
    code, out = _settings_with(CELERY_QUEUE_TYPE="quorum")
    assert code != 0 and "CELERY_QUEUE_TYPE=quorum needs RabbitMQ" in out
    code, out = _settings_with(CELERY_QUEUE_TYPE="mirrored")
    assert code != 0 and "use one of classic, quorum" in out


def test_quorum_on_rabbitmq_declares_quorum_queues_on_topic_exchanges():
    code, out = _settings_with(
        CELERY_QUEUE_TYPE="quorum", CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//"
    )
    assert code == 0, out
    for name in ("scan.ai.pipeline", "scan.image", "notification", "default"):
        assert f"('{name}', 'topic', 'quorum')" in out
