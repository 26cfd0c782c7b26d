"""Business logic of notifications: decide, record, then send exactly once.

The pattern is the scan pipeline's: the ``Notification`` row is written (unique
``dedupe_key``) in the caller's transaction, the send task is published only after commit,
and the task claims the row with a conditional UPDATE before it talks to the mail server.
The row is also the outbox: ``resend_pending`` (beat) re-publishes what was never sent.

The modules, each importing only those above it: ``messages`` (the texts), ``sending`` (the
claim and the send), ``outbox`` (publishing the send task, the resend sweep), ``notify``
(deciding and recording), ``preferences``. None imports the task module, which imports them.
"""

from __future__ import annotations

from .messages import scan_completed_message, scan_needs_input_message
from .notify import notify_scan_completed, notify_scan_needs_input, notify_staff
from .outbox import PUBLISH_RETRY_POLICY, enqueue, resend_pending, send_again
from .preferences import preferences_for, update_preferences
from .retention import prune_notifications
from .sending import (
    FAILED,
    MAX_ATTEMPTS,
    MAX_SEND_RETRIES,
    SENDING_LEASE,
    SENT,
    SKIPPED,
    TRANSIENT_SEND_ERRORS,
    deliver,
    describe_error,
    give_up,
)

__all__ = [
    "FAILED",
    "MAX_ATTEMPTS",
    "MAX_SEND_RETRIES",
    "PUBLISH_RETRY_POLICY",
    "SENDING_LEASE",
    "SENT",
    "SKIPPED",
    "TRANSIENT_SEND_ERRORS",
    "deliver",
    "describe_error",
    "enqueue",
    "give_up",
    "notify_scan_completed",
    "notify_scan_needs_input",
    "notify_staff",
    "preferences_for",
    "prune_notifications",
    "resend_pending",
    "scan_completed_message",
    "scan_needs_input_message",
    "send_again",
    "update_preferences",
]
