"""The base of frequent periodic jobs: in the task history and the attempt ledger only when a
run did something, so that idle runs do not bury the tasks people look for."""

from __future__ import annotations

from typing import Any

from celery import Task, states


class RecordedWhenBusy(Task):
    """A frequent periodic job (the relays every 5 and 10 s, the sweeper, the resend of
    notifications and the dead-letter check every few minutes) in the task history only when
    it did something: an idle run stores no result and no PENDING row (scans.task_history
    skips tasks sent with ignore_result), and no attempt (scans.ledger). Idle relay runs alone
    wrote ~26,000 rows a day. A failure is always stored."""

    ignore_result = True
    store_errors_even_if_ignored = True
    recorded_when_busy = True  # the attempt ledger (scans.ledger) keeps busy and failed runs only

    @staticmethod
    def busy(retval: Any) -> bool:
        """Whether a run did something: a count above zero, or a summary of counts not all 0."""
        if isinstance(retval, dict):
            return any(retval.values())
        return bool(retval)

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        if status == states.SUCCESS and self.busy(retval) and task_id:
            # store_result: mark_as_done skips a request sent with ignore_result
            self.backend.store_result(task_id, retval, states.SUCCESS, request=self.request)
