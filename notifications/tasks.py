"""Celery tasks of notifications (queue ``notification``). Thin: the services do the work.

``send_email`` is safe to run twice for the same id: ``services.deliver`` claims the row
before sending, so a duplicate publish or a redelivery sends nothing more.

The Python functions end in ``_task``; the registered names (``notifications.tasks.…``) stay,
because beat rows and in-flight messages use them. The services publish by name.
"""

from __future__ import annotations

import smtplib

from celery import Task, shared_task

from eco2.periodic import RecordedWhenBusy

from . import services


class SendEmailTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Runs once Celery stops retrying (or on an error it does not retry): the row would
        # otherwise wait as 'pending' for the resend sweep to try it all over again.
        notification_id = args[0] if args else kwargs.get("notification_id")
        if notification_id is None:
            return
        services.give_up(notification_id, services.describe_error(exc))


@shared_task(
    base=SendEmailTask,
    bind=True,
    name="notifications.tasks.send_email",
    autoretry_for=(smtplib.SMTPException, ConnectionError, OSError),
    retry_backoff=True,  # 1, 2, 4 … s
    retry_backoff_max=60,  # the resend sweep treats a row untouched for 60 s as lost
    # No jitter: Celery's full jitter draws 0 s half the time on the first retry, retrying at
    # once a server that just said "try again later"; and a 0 s retry can finish on another
    # pool process before this one has stored RETRY, leaving the task history at RETRY after
    # the mail went out (seen in CI). Mails are few: no herd to spread.
    retry_jitter=False,
    retry_kwargs={"max_retries": services.MAX_SEND_RETRIES},
    # EMAIL_TIMEOUT (10 s) bounds each SMTP step; this only catches a send that hangs anyway.
    # The killed send is left 'sending' and recovered by the sweep after SENDING_LEASE.
    time_limit=60,
)
def send_email_task(self, notification_id: int) -> str:
    return services.deliver(notification_id)


@shared_task(base=RecordedWhenBusy, name="notifications.tasks.resend_pending_notifications")
def resend_pending_notifications_task() -> int:
    return services.resend_pending()


@shared_task(name="notifications.tasks.prune_notifications")
def prune_notifications_task() -> dict:
    """The notifications' retention job (beat, hourly): what it deleted."""
    return services.prune_notifications()
