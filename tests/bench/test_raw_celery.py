"""The raw-Celery anchor's result reads (bench/raw_celery.py)."""

import uuid

import pytest

from bench import raw_celery


@pytest.fixture
def file_results(tmp_path, monkeypatch):
    """The anchor's app as smoke runs it: results in files, no Redis."""
    monkeypatch.setenv("ECO2_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = raw_celery.make_app()
    monkeypatch.setattr(raw_celery, "app", app)
    return app.backend


def test_a_torn_result_file_reads_as_not_done_until_the_write_completes(file_results):
    task_id = uuid.uuid4().hex
    file_results.mark_as_done(task_id, {"step": "answer"})
    path = file_results._filename(file_results.get_key_for_task(task_id))
    with open(path, "rb") as stored:
        whole = stored.read()
    # what a poll racing the worker's rewrite of the file read in CI: a document, then more
    with open(path, "wb") as torn:
        torn.write(whole + b', "status": "STARTED"}')

    assert raw_celery.done_at([task_id]) == {}

    with open(path, "wb") as written:
        written.write(whole)
    state, _done = raw_celery.wait_done(task_id, timeout=5)
    assert state == "SUCCESS"
