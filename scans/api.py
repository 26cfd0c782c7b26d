"""The REST API (DRF). Views are thin: validate, call a service or selector, serialize."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.translation import gettext as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import (
    APIException,
    NotFound,
    ParseError,
    Throttled,
    ValidationError,
)
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from eco2 import login_guard

from . import idempotency, services
from .creation_rate import ScanRateLimited
from .filters import ScanFilter
from .models import Scan, ScanBatch
from .rules import get_taxonomy
from .selectors import scans_visible_to
from .serializers import (
    BatchCreateSerializer,
    ScanAcceptedSerializer,
    ScanChooseSerializer,
    ScanCreateSerializer,
    ScanHintSerializer,
    ScanSerializer,
    TaxonomySerializer,
    batch_detail,
    scan_links,
)

logger = logging.getLogger(__name__)

# Room for the multipart framing and the hint around the photo(s) in one request.
MULTIPART_OVERHEAD = 64 * 1024


def upload_request_limit(*, batch: bool) -> int:
    """The largest request body accepted on the scan-creation endpoints."""
    photos = settings.SCAN_BATCH_MAX_IMAGES if batch else 1
    return photos * settings.SCAN_IMAGE_MAX_BYTES + MULTIPART_OVERHEAD


class UploadSizeLimitMiddleware:
    """413 for a scan upload whose Content-Length is over the limit, before anything reads the
    body (DRF's CSRF check of a session request would parse the whole multipart body first).

    Per-file limits inside a smaller request stay a 400 from the serializer. Django's own
    DATA_UPLOAD_MAX_MEMORY_SIZE never counts file parts, so this is the cap on uploads (set
    the proxy's client_max_body_size to match).
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self._prefix = None

    def __call__(self, request):
        if request.method in ("POST", "PUT", "PATCH"):
            if self._prefix is None:
                self._prefix = reverse("api:scan-list")
            path = request.path_info
            if path == self._prefix or path.startswith(self._prefix + "/"):
                refusal = self._refusal(request, batch=path.rstrip("/").endswith("/batch"))
                if refusal is not None:
                    return refusal
        return self.get_response(request)

    @staticmethod
    def _refusal(request, *, batch: bool) -> JsonResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            return JsonResponse({"detail": _("Invalid Content-Length header.")}, status=400)
        limit = upload_request_limit(batch=batch)
        if length > limit:
            size = filesizeformat(length)
            per_photo = filesizeformat(settings.SCAN_IMAGE_MAX_BYTES)
            detail = _("The upload is %(size)s; the limit is %(limit)s per photo.") % {
                "size": size,
                "limit": per_photo,
            }
            if batch:
                detail += " " + _("At most %(count)d photos per batch.") % {
                    "count": settings.SCAN_BATCH_MAX_IMAGES
                }
            response = JsonResponse({"detail": detail}, status=413)
            response["Connection"] = "close"  # the unread body is not worth draining
            return response
        return None


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


class PipelineBusyResponse(APIException):
    """503 with Retry-After (DRF sets the header from ``wait``) for services.PipelineBusy."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = services.PipelineBusy.code

    def __init__(self, busy: services.PipelineBusy) -> None:
        super().__init__(busy.message, code=busy.code)
        self.wait = busy.retry_after


class ScanCreateMixin:
    """What both scan-creating endpoints share: 4xx (never 500) for requests Django's parser
    refuses, 429 over the per-user rate (enforced by the services, scans.creation_rate) and 503
    when the backlog is full, both with Retry-After."""

    def handle_exception(self, exc):
        if isinstance(exc, RequestDataTooBig):
            exc = ParseError(_("The request's form fields are too large."))
        elif isinstance(exc, SuspiciousOperation):
            exc = ParseError(_("The request could not be read (%(reason)s).") % {"reason": exc})
        elif isinstance(exc, services.PipelineBusy):
            exc = PipelineBusyResponse(exc)
        elif isinstance(exc, ScanRateLimited):
            exc = Throttled(wait=exc.retry_after, detail=exc.message, code=exc.code)
        return super().handle_exception(exc)


CREATE_ERRORS = {
    400: OpenApiResponse(description="Invalid upload (a message per field)"),
    413: OpenApiResponse(description="The request is larger than the upload limit"),
    429: OpenApiResponse(description="Too many scans; see Retry-After"),
    503: OpenApiResponse(
        description="Too many scans waiting for a worker (SCAN_BACKLOG_LIMIT); nothing was "
        "stored, see Retry-After"
    ),
}


def get_visible_scan(request, task_id: str) -> Scan:
    """The scan if the caller may see it; 404 otherwise, so ids of others do not leak."""
    try:
        scan_id = uuid.UUID(str(task_id))
    except ValueError:
        raise NotFound("No scan with this task id.") from None
    scan = scans_visible_to(request.user).filter(pk=scan_id).first()
    if scan is None:
        raise NotFound("No scan with this task id.")
    return scan


class ScanListCreateView(ScanCreateMixin, generics.ListCreateAPIView):
    serializer_class = ScanSerializer
    # the history page's filters (status, category, dates, search); a bad value is a 400
    filter_backends = [DjangoFilterBackend]
    filterset_class = ScanFilter

    def get_queryset(self):
        scans = Scan.objects.order_by("-created_at")
        if getattr(self, "swagger_fake_view", False):  # the schema's filters read the model only
            return scans.none()
        # staff may list everyone's scans with ?all=1; for anyone else the flag changes nothing
        if self.request.user.is_staff and self.request.query_params.get("all") in ("1", "true"):
            return scans
        return scans.filter(owner=self.request.user)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "all",
                OpenApiTypes.BOOL,
                description="Staff only: every user's scans (ignored for others).",
            )
        ],
        summary="Your scans, newest first; filtered as on the history page",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=ScanCreateSerializer,
        parameters=[
            OpenApiParameter(
                idempotency.HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Optional, at most 255 visible ASCII characters. A replay (same "
                "key, same user, within 24 h) gets the first response and creates no scan; the "
                "same key with a different photo, URL or hint is a 422.",
            )
        ],
        responses={
            202: ScanAcceptedSerializer,
            **CREATE_ERRORS,
            422: OpenApiResponse(description="Idempotency-Key reused with a different request"),
        },
        summary="Upload a photo (or give image_url); the pipeline runs in the background",
    )
    def post(self, request, *args, **kwargs):
        try:
            key = idempotency.read_key(request.headers)
        except idempotency.InvalidKey as exc:
            raise ParseError(str(exc)) from None
        form = ScanCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data

        def create() -> idempotency.StoredResponse:
            scan = services.create_scan(
                owner=request.user,
                image=data.get("image"),
                image_url=data.get("image_url", ""),
                hint=data.get("hint", ""),
                language=request.LANGUAGE_CODE,
            )
            links = scan_links(scan, request)
            body = {"task_id": str(scan.id), "status": scan.status, **links}
            return idempotency.StoredResponse(
                status=status.HTTP_202_ACCEPTED, body=body, location=links["status_url"], scan=scan
            )

        if key is None:
            stored = create()
        else:
            try:
                stored = idempotency.run_once(
                    owner=request.user,
                    key=key,
                    request_fingerprint=idempotency.fingerprint(
                        image=data.get("image"),
                        image_url=data.get("image_url", ""),
                        hint=data.get("hint", ""),
                    ),
                    create=create,
                )
            except idempotency.KeyReused as exc:
                return Response({"detail": str(exc)}, status=422)
            except idempotency.KeyInFlight as exc:
                return Response({"detail": str(exc)}, status=409, headers={"Retry-After": "1"})
        return Response(stored.body, status=stored.status, headers=stored.headers())


class ScanDetailView(APIView):
    @extend_schema(responses=ScanSerializer, summary="Status, step, progress and result of a scan")
    def get(self, request, task_id: str):
        scan = get_visible_scan(request, task_id)
        return Response(ScanSerializer(scan, context={"request": request}).data)


class ScanAnswerMixin:
    """Answering a scan that asked which one it is: the owner's (or staff's) scan, else 404;
    an answer that cannot resume it is a 400 naming the field; a scan not waiting is a 409."""

    request_serializer: type[serializers.Serializer]

    def resume(self, scan: Scan, data: dict, actor: str) -> Scan:
        raise NotImplementedError

    def post(self, request, task_id: str):
        scan = get_visible_scan(request, task_id)
        form = self.request_serializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            scan = self.resume(scan, form.validated_data, f"api:{request.user.get_username()}")
        except services.InvalidAnswer as exc:
            raise ValidationError({exc.field: [exc.message]}, code=exc.code) from None
        except services.ScanNotWaiting as exc:
            return Response({"detail": exc.message, "code": exc.code}, status=409)
        links = scan_links(scan, request)
        body = {"task_id": str(scan.id), "status": scan.status, **links}
        return Response(
            body, status=status.HTTP_202_ACCEPTED, headers={"Location": links["status_url"]}
        )


ANSWER_ERRORS = {
    400: OpenApiResponse(
        description="Not a category code, an item of another category, or "
        "the same hint again (a message per field)"
    ),
    404: OpenApiResponse(description="No scan with this task id (or not yours)"),
    409: OpenApiResponse(
        description="The scan is not waiting for a choice (status is not "
        "needs_input), e.g. the second of two taps"
    ),
}


class ScanChooseView(ScanAnswerMixin, APIView):
    request_serializer = ScanChooseSerializer

    @extend_schema(
        request=ScanChooseSerializer,
        responses={202: ScanAcceptedSerializer, **ANSWER_ERRORS},
        summary="Answer “which one is it?”: resume the scan at the rule step with this category",
        description="Only while the scan's status is `needs_input`. The photo is not recognised "
        "again (no new provider call); the classification becomes the owner's choice "
        '(`chosen_by: "user"`, confidence 1.0), then the rules and the guidance follow as usual '
        "and the scan completes. Follow it at `status_url` or `events_url`.",
    )
    def post(self, request, task_id: str):
        return super().post(request, task_id)

    def resume(self, scan: Scan, data: dict, actor: str) -> Scan:
        return services.choose_category(
            scan, category_code=data["category_code"], item=data.get("item", ""), actor=actor
        )


class ScanHintView(ScanAnswerMixin, APIView):
    request_serializer = ScanHintSerializer

    @extend_schema(
        request=ScanHintSerializer,
        responses={202: ScanAcceptedSerializer, **ANSWER_ERRORS},
        summary="Answer “which one is it?” with a hint: recognise the photo again",
        description="Only while the scan's status is `needs_input`. The hint replaces the scan's "
        "hint and the scan runs again from the vision step. With the OpenAI provider that is a "
        "new, paid call (the recognition is cached per photo and hint); the offline provider "
        "costs nothing. The scan may ask again.",
    )
    def post(self, request, task_id: str):
        return super().post(request, task_id)

    def resume(self, scan: Scan, data: dict, actor: str) -> Scan:
        return services.rerun_with_hint(scan, hint=data["hint"], actor=actor)


class CategoriesView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses=TaxonomySerializer(many=True),
        summary="The taxonomy (majors → categories → items)",
    )
    def get(self, request):
        return Response(get_taxonomy())


class BatchCreateView(ScanCreateMixin, APIView):
    @extend_schema(
        request=BatchCreateSerializer,
        responses={202: OpenApiTypes.OBJECT, **CREATE_ERRORS},
        summary="Upload several photos; one chord of pipelines with a batch summary at the end",
    )
    def post(self, request):
        form = BatchCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batch = services.create_batch(
            owner=request.user,
            images=form.validated_data["images"],
            hint=form.validated_data.get("hint", ""),
            language=request.LANGUAGE_CODE,
        )
        status_url = request.build_absolute_uri(reverse("api:batch-detail", args=[batch.id]))
        body = {
            "batch_id": str(batch.id),
            "status": batch.status,
            "status_url": status_url,
            "task_ids": [
                str(scan_id)
                for scan_id in batch.scans.order_by("created_at", "id").values_list("id", flat=True)
            ],
        }
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": status_url})


class BatchDetailView(APIView):
    @extend_schema(
        responses=OpenApiTypes.OBJECT, summary="Per-item status, batch progress and summary"
    )
    def get(self, request, batch_id: str):
        try:
            batch_uuid = uuid.UUID(str(batch_id))
        except ValueError:
            raise NotFound("No batch with this id.") from None
        batches = (
            ScanBatch.objects.all()
            if request.user.is_staff
            else ScanBatch.objects.filter(owner=request.user)
        )
        batch = batches.filter(pk=batch_uuid).first()
        if batch is None:
            raise NotFound("No batch with this id.")
        return Response(batch_detail(batch, include_detail=request.user.is_staff))
