from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Scans"

    def ready(self) -> None:
        # Connect the Celery signal handlers and the rule base's revision signals; register the
        # tasks (the services publish them by name) and the app's /metrics families.
        from . import ledger, task_history, tasks, worker_start  # noqa: F401
        from .metrics import register_scrape_parts
        from .rules import cache  # noqa: F401

        register_scrape_parts()
