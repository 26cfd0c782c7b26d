"""Three no-op tasks for bench/pipeline_overhead.py: the raw Celery chain a scan is compared to.

Registered through bench.settings (CELERY_IMPORTS) and routed to the AI pipeline queue, so they
run on the same broker, queue, pool and worker settings as vision_scan → rule_match →
answer_gen (late acks, prefetch 1, django-db results, the app's task signals), doing nothing.
"""

from __future__ import annotations

from celery import chain, shared_task

from eco2.queues import SCAN_PIPELINE_QUEUE


@shared_task(name="bench.noop_tasks.noop_vision", queue=SCAN_PIPELINE_QUEUE)
def noop_vision(token: str) -> dict:
    return {"token": token, "step": "vision", "outcome": "succeeded"}


@shared_task(name="bench.noop_tasks.noop_rule", queue=SCAN_PIPELINE_QUEUE)
def noop_rule(token: str) -> dict:
    return {"token": token, "step": "rule", "outcome": "succeeded"}


@shared_task(name="bench.noop_tasks.noop_answer", queue=SCAN_PIPELINE_QUEUE)
def noop_answer(token: str) -> dict:
    return {"token": token, "step": "answer", "outcome": "succeeded"}


def noop_chain(token: str):
    """vision → rule → answer as no-ops, each explicitly on the pipeline queue."""
    return chain(
        *(
            task.si(token).set(queue=SCAN_PIPELINE_QUEUE)
            for task in (noop_vision, noop_rule, noop_answer)
        )
    )
