from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Scans"

    def ready(self) -> None:
        # connect the Celery signal handlers, and the rule base's revision signals
        from . import ledger, rulebase_cache, task_history, tasks  # noqa: F401
