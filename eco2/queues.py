"""Broker queue, exchange and task names: the ground floor that the Celery app, the apps and
the monitoring share. Plain strings only; this module imports nothing."""

from __future__ import annotations

SCAN_PIPELINE_QUEUE = "scan.ai.pipeline"
# CPU-bound photo preparation runs on its own queue, for a prefork worker; the AI steps are
# network-bound and suit a threads pool with high concurrency (see docs/benchmarks.md).
SCAN_IMAGE_QUEUE = "scan.image"
SCAN_DEAD_LETTER_QUEUE = "scan.ai.dlq"
SCAN_DEAD_LETTER_EXCHANGE = "scan.ai.dlx"
NOTIFICATION_QUEUE = "notification"
DEFAULT_QUEUE = "default"

# The queues workers consume (eco2/celery.py declares them), and the ones /metrics counts: the
# dead-letter queue is declared by the scans app (scans/broker.py) and consumed by nobody.
CONSUMED_QUEUES = (SCAN_PIPELINE_QUEUE, SCAN_IMAGE_QUEUE, NOTIFICATION_QUEUE, DEFAULT_QUEUE)
MONITORED_QUEUES = (*CONSUMED_QUEUES, SCAN_DEAD_LETTER_QUEUE)

# Registered task names (beat rows and in-flight messages use them: they never change).
SCAN_AI_TASKS = ("scans.tasks.vision_scan", "scans.tasks.rule_match", "scans.tasks.answer_gen")
SCAN_PIPELINE_TASKS = ("scans.tasks.prepare_image", *SCAN_AI_TASKS)

# Rejected or expired pipeline messages go to scan.ai.dlq (RabbitMQ; other brokers ignore
# queue arguments and rely on the failure handler alone).
DEAD_LETTER_ARGUMENTS = {
    "x-dead-letter-exchange": SCAN_DEAD_LETTER_EXCHANGE,
    "x-dead-letter-routing-key": SCAN_DEAD_LETTER_QUEUE,
}
