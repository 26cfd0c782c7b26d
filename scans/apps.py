from django.apps import AppConfig


class ScansConfig(AppConfig):
    name = "scans"
    verbose_name = "Scans"

    def ready(self) -> None:
        from . import ledger  # noqa: F401 - connects the Celery signal handlers
