"""Settings for benchmarks: the project's settings plus a bare endpoint to compare against,
and the no-op tasks of bench/pipeline_overhead.py (loaded by workers through CELERY_IMPORTS)."""

from eco2.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
CELERY_IMPORTS = ("bench.noop_tasks",)
