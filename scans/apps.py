from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Scans"

    def ready(self) -> None:
        # connect the Celery signal handlers, and the rule base's revision signals
        from . import ledger, task_history  # noqa: F401
        from .rules import cache  # noqa: F401
