from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Scans"

    def ready(self) -> None:
        from . import ledger, task_history  # noqa: F401 - connect the Celery signal handlers
