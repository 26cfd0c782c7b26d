"""The Celery configuration the pipeline's guarantees rest on."""

from eco2.celery import app
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


def test_delivery_settings_are_at_least_once():
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_retry_delay == 60 and conf.task_max_retries == 3
    assert conf.result_backend == "django-db" and conf.result_extended and conf.task_track_started
    # pipeline steps leave their start to the attempt ledger (one write instead of three)
    assert not any(task.track_started for task in STEP_TASKS.values())
    assert conf.timezone == "Asia/Seoul"


def test_the_pipeline_queue_dead_letters_to_the_dlq():
    queue = next(q for q in app.conf.task_queues if q.name == "scan.ai.pipeline")
    assert queue.queue_arguments["x-dead-letter-routing-key"] == "scan.ai.dlq"


def test_a_worker_that_runs_the_offline_matcher_loads_the_analyser_before_forking(
    monkeypatch, settings
):
    from types import SimpleNamespace

    from eco2.celery import _load_the_korean_analyser_before_the_pool_starts as on_worker_init
    from scans import morphology

    loaded = []
    monkeypatch.setattr(morphology, "warm_analyser", lambda: loaded.append(True))

    def worker(*queues):
        return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(
            queues=SimpleNamespace(consume_from={q: None for q in queues})
        )))  # fmt: skip

    settings.SCAN_VISION_PROVIDER = "scans.providers.OfflineVisionProvider"
    on_worker_init(sender=worker("scan.image"))  # the photo worker does not match text
    assert loaded == []
    on_worker_init(sender=worker("scan.image", "scan.ai.pipeline"))
    assert loaded == [True]

    settings.SCAN_VISION_PROVIDER = "scans.providers.OpenAIVisionProvider"
    on_worker_init(sender=worker("scan.ai.pipeline"))  # OpenAI names the category itself
    assert loaded == [True]
