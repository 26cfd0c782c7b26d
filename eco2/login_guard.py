"""Limits on password guessing (django-axes), for the login page, the admin login and
``POST /api/v1/auth/token``.

After ``AXES_FAILURE_LIMIT`` failed log-ins for a username, or from an address, within
``AXES_COOLOFF_TIME``, that username (from anywhere) and that address (for any username) are
refused, even with the right password, until the cool-off has passed since the last failure
that counted: 429 with ``Retry-After`` and a message in the request's language. The attempts
are kept in the database (axes' database handler).
"""

from __future__ import annotations

import math

from axes.handlers.database import AxesDatabaseHandler
from axes.models import AccessAttempt
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from scans.errors import error_message

LOCKED_OUT_CODE = "login_locked_out"


def lockout_seconds() -> int:
    return math.ceil(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_message() -> str:
    return error_message(LOCKED_OUT_CODE, minutes=math.ceil(lockout_seconds() / 60))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials=None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the login page (or the admin's) with the reason, 429."""
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"detail": lockout_message()}, status=429)
    else:
        response = render(
            request, "registration/locked_out.html", {"message": lockout_message()}, status=429
        )
    response["Retry-After"] = str(lockout_seconds())
    return response


class LoginAttemptHandler(AxesDatabaseHandler):
    """axes' database handler, except what a successful log-in forgets: the failures of that
    username from that address only.

    axes' AXES_RESET_ON_SUCCESS deletes every attempt of the username *or* the address: an
    attacker who also owns an account could then log into it between guesses and never reach
    the limit for the address, nor for the victim's username.
    """

    def user_logged_in(self, sender, request, user, **kwargs):
        super().user_logged_in(sender, request, user, **kwargs)
        AccessAttempt.objects.filter(
            username=user.get_username(), ip_address=request.axes_ip_address
        ).delete()
