from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # register the tasks: the services publish them by name (services.outbox.SEND_EMAIL)
        from . import tasks  # noqa: F401
