"""Settings for benchmarks: the project's settings plus a bare endpoint to compare against."""

from eco2.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
