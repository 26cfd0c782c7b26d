"""Errors a user may read: a stable ``code`` for clients and logs, a ``message`` for people."""

from __future__ import annotations


class CodedError(Exception):
    """Base of the errors that carry a code and a user-facing message.

    A subclass names its default ``code``; ``code=`` overrides it per instance.
    """

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def __reduce__(self):
        # Celery pickles a task's exception before the failure handler sees it. The default
        # reduce replays ``args`` (the message alone): the code set per instance, and any
        # keyword argument of a subclass (retry_after), would be lost, or the exception would
        # arrive as UnpickleableExceptionWrapper and the scan fail as "internal_error".
        return (_restore, (type(self), self.message), self.__dict__)


def _restore(cls: type[CodedError], message: str) -> CodedError:
    """An instance of ``cls`` with its message; pickle then restores its attributes."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error
