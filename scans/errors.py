"""Errors a user may read: a stable ``code`` for clients and logs; what people are told comes
from the code, in their language, never from an exception's text.

``ERROR_CODES`` is the one catalogue of those codes: what a person reads (translated) and
whether retrying the scan can help. A failed scan stores its code and, for staff, a technical
detail (the exception's own message, in English); pages and the API render the message from
the code in the request's language (``error_message``).

To add a code: one ``ErrorCode`` entry below (a ``gettext_lazy`` message, and ``retry``), its
Korean msgstr appended to locale/ko/LC_MESSAGES/django.po (the msgid to locale/en as well),
then `manage.py compilemessages`. A message stored scans are shown with takes no placeholders;
request-time messages may (``error_message(code, rate=…)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class ErrorCode:
    message: str | Promise  # gettext_lazy: rendered in the language active when shown
    retry: bool  # whether trying the same scan again can succeed (False: the input is the problem)


ERROR_CODES: dict[str, ErrorCode] = {
    # --- the pipeline itself
    "internal_error": ErrorCode(_("An unexpected error stopped the scan."), retry=True),
    "scan_step_failed": ErrorCode(_("A step of the scan could not go on."), retry=True),
    "vision_missing": ErrorCode(_("A step of the scan could not go on."), retry=True),
    "rules_missing": ErrorCode(_("A step of the scan could not go on."), retry=True),
    "worker_lost": ErrorCode(
        _("The worker running this scan stopped several times in a row."), retry=True
    ),
    "step_timeout": ErrorCode(_("A step of the scan took too long and was stopped."), retry=True),
    "stalled": ErrorCode(
        _("The scan made no progress for a long time and was stopped."), retry=True
    ),
    # an operator revoked or terminated one of its steps (admin task history)
    "cancelled": ErrorCode(_("An operator cancelled the scan."), retry=True),
    # --- the recognition / answer service (scans.providers)
    "provider_refused": ErrorCode(
        _("The recognition service refused to describe this photo."), retry=False
    ),
    "provider_rejected": ErrorCode(_("The recognition service rejected the request."), retry=False),
    "invalid_provider_output": ErrorCode(
        _("The recognition service gave an answer that could not be used."), retry=True
    ),
    # a retry helps once staff have fixed the set-up or the quota
    "provider_auth": ErrorCode(_("The recognition service is not set up correctly."), retry=True),
    "provider_quota_exceeded": ErrorCode(
        _("The recognition service's quota is used up."), retry=True
    ),
    "provider_rate_limited": ErrorCode(_("The recognition service is busy."), retry=True),
    # its Retry-After was longer than SCAN_RETRY_AFTER_MAX: the detail has the time to come back
    "provider_rate_limited_long": ErrorCode(
        _(
            "The recognition service asked Eco² to pause for longer than a scan can wait. "
            "Please try again later."
        ),
        retry=True,
    ),
    "provider_timeout": ErrorCode(_("The recognition service did not answer in time."), retry=True),
    "provider_unavailable": ErrorCode(_("The recognition service is unavailable."), retry=True),
    "provider_unreachable": ErrorCode(
        _("The recognition service could not be reached."), retry=True
    ),
    "provider_error": ErrorCode(_("The recognition service reported an error."), retry=True),
    # --- the photo (scans.images): another photo, not a retry
    "image_missing": ErrorCode(_("The uploaded photo is no longer available."), retry=False),
    "corrupt": ErrorCode(_("The photo is damaged and cannot be read."), retry=False),
    "too_many_pixels": ErrorCode(_("The photo has too many pixels."), retry=False),
    "unsupported_format": ErrorCode(
        _("The photo is not a JPEG, PNG, WebP, GIF, HEIC or AVIF image."), retry=False
    ),
    # --- messages that are not a scan's (scans.ledger, eco2/worker_consumer.py)
    "malformed_message": ErrorCode(
        _("The task message for this scan was damaged and could not be run."), retry=False
    ),
    "unknown_scan": ErrorCode(_("The task named a scan that does not exist."), retry=False),
    # --- photos given by address (scans.fetch)
    "image_url_refused": ErrorCode(
        _(
            "Eco² does not fetch photos from this address: only public http:// and https:// "
            "addresses are allowed."
        ),
        retry=False,
    ),
    "image_url_unreachable": ErrorCode(_("The photo's address could not be reached."), retry=True),
    "image_url_timeout": ErrorCode(_("The photo's address did not answer in time."), retry=True),
    "image_url_http_error": ErrorCode(
        _("The photo's address answered with an error instead of the photo."), retry=True
    ),
    "image_url_too_many_redirects": ErrorCode(
        _("The photo's address redirected too many times."), retry=False
    ),
    "image_url_too_large": ErrorCode(
        _("The photo at the address is larger than the upload limit."), retry=False
    ),
    "image_url_empty": ErrorCode(_("The photo's address returned an empty file."), retry=False),
    # --- refusals at upload time (nothing is stored); these messages take placeholders
    "scan_rate_limited": ErrorCode(
        _("Too many scans in a short time (at most %(rate)s per user)."), retry=True
    ),
    "login_locked_out": ErrorCode(
        _(
            "Too many failed log-ins for this account or from this address. Try again in "
            "%(minutes)d minutes."
        ),
        retry=True,
    ),
    "pipeline_busy": ErrorCode(
        _("Eco² has more scans waiting than it can take right now. Try again in %(seconds)d s."),
        retry=True,
    ),
    # --- answers to a scan that asked which one it is (status needs_input)
    "scan_not_waiting": ErrorCode(
        _("This scan is not waiting for a choice (it is %(status)s)."), retry=False
    ),
    "invalid_choice": ErrorCode(
        _("“%(value)s” is not a category code: the codes are listed at /api/v1/categories."),
        retry=False,
    ),
    "invalid_choice_item": ErrorCode(_("“%(item)s” is not an item of %(category)s."), retry=False),
    "same_hint": ErrorCode(
        _("The hint is the one the scan already had: describe the item another way."),
        retry=False,
    ),
}
# A code nobody has described yet still gets a sentence, never the exception's text.
UNKNOWN_ERROR = ErrorCode(_("The scan failed."), retry=True)


def error_entry(code: str) -> ErrorCode:
    return ERROR_CODES.get(code, UNKNOWN_ERROR)


def error_message(code: str, **params) -> str:
    """What a person reads for ``code``, in the active language."""
    text = str(error_entry(code).message)
    return text % params if params else text


def retry_helps(code: str) -> bool:
    return error_entry(code).retry


class CodedError(Exception):
    """Base of the errors that carry a code; ``message`` is the technical detail (logs, staff).

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


# The attempt ledger keeps a failed attempt's text as "<code>: <detail>" (scans.ledger), so the
# live retry line can name the reason in the reader's language without showing the detail.
_CODED_TEXT = re.compile(r"^([a-z][a-z0-9_]*): ")


def coded_text(exc: BaseException) -> str:
    """An exception as the ledger stores it: its code first when it has one."""
    if isinstance(exc, CodedError):
        return f"{exc.code}: {exc.message}"
    return str(exc)


def code_of_text(text: str) -> str | None:
    """The code a ledger text starts with (see ``coded_text``), if it is a known one."""
    match = _CODED_TEXT.match(text or "")
    return match.group(1) if match and match.group(1) in ERROR_CODES else None
