"""The API's answer to the project's errors (DRF ``EXCEPTION_HANDLER``): each coded error of the
services becomes its HTTP status with ``{"detail", "code"}`` (the message in the request's
language, from the error catalogue in scans/errors.py), requests Django's parser refuses become
a 400, and everything else is DRF's own answer. Never a 500 for a refusal the user can act on."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .. import idempotency
from ..creation_rate import ScanRateLimited
from ..errors import CodedError
from ..services import InvalidAnswer, PipelineBusy, ScanNotWaiting


class CodedAPIError(APIException):
    """A coded error at its HTTP status; ``wait`` becomes Retry-After (DRF sets the header)."""

    def __init__(self, detail: str, *, code: str, status_code: int, wait: int | None = None):
        super().__init__(detail, code=code)
        self.status_code = status_code
        self.wait = wait


def as_api_exception(exc: Exception) -> Exception:
    """The project's error as the APIException that answers it (others unchanged)."""
    if isinstance(exc, RequestDataTooBig):
        return ParseError(_("The request's form fields are too large."))
    if isinstance(exc, SuspiciousOperation):
        return ParseError(_("The request could not be read (%(reason)s).") % {"reason": exc})
    if isinstance(exc, PipelineBusy):  # the backlog is full: nothing was stored
        return CodedAPIError(exc.message, code=exc.code, status_code=503, wait=exc.retry_after)
    if isinstance(exc, ScanRateLimited):
        return Throttled(wait=exc.retry_after, detail=exc.message, code=exc.code)
    if isinstance(exc, InvalidAnswer):  # names the field, like any other invalid input
        return ValidationError({exc.field: [exc.message]}, code=exc.code)
    if isinstance(exc, ScanNotWaiting):
        return CodedAPIError(exc.message, code=exc.code, status_code=status.HTTP_409_CONFLICT)
    if isinstance(exc, idempotency.InvalidKey):
        return ParseError(str(exc))
    if isinstance(exc, idempotency.KeyReused):
        return CodedAPIError(str(exc), code="idempotency_key_reused", status_code=422)
    if isinstance(exc, idempotency.KeyInFlight):
        return CodedAPIError(str(exc), code="idempotency_key_in_flight", status_code=409, wait=1)
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: DRF's handler, after ``as_api_exception``; a coded
    error's body carries its ``code`` beside the ``detail``."""
    coded = isinstance(exc, CodedError | idempotency.KeyReused | idempotency.KeyInFlight)
    api_exc = as_api_exception(exc)
    response = drf_exception_handler(api_exc, context)
    if (
        coded
        and response is not None
        and isinstance(api_exc, APIException)
        and isinstance(response.data, dict)
        and "detail" in response.data
    ):
        response.data["code"] = api_exc.get_codes()
    return response
