"""The API's log-in: a token for ``Authorization: Token …``, under the login lockout."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response

from eco2 import login_guard


class LoginLockedOut(APIException):
    """429 with Retry-After for a username or address locked out by django-axes."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = login_guard.LOCKED_OUT_CODE

    def __init__(self) -> None:
        super().__init__(login_guard.lockout_message())
        self.wait = login_guard.lockout_seconds()


class TokenView(ObtainAuthToken):
    """DRF's obtain_auth_token under the login lockout (eco2/login_guard.py). axes marks the
    DRF request it was given, which its middleware never sees: the view answers for it. A
    token issued is a log-in (user_logged_in), which clears that address's failures."""

    @extend_schema(
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiResponse(description="Wrong username or password"),
            429: OpenApiResponse(
                description="Too many failed log-ins for the username or from the address; "
                "see Retry-After"
            ),
        },
        summary="A token for Authorization: Token …",
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        if not serializer.is_valid():
            if getattr(request, "axes_locked_out", False):
                raise LoginLockedOut()
            raise ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        user_logged_in.send(sender=type(user), request=request, user=user)
        token, _created = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
