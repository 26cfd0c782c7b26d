"""The scan endpoints of the REST API: upload and list, status, answering "which one is it?",
the taxonomy. Thin: validate, call a service or selector, serialize; errors are answered by
scans/api/exceptions.py."""

from __future__ import annotations

import logging

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from eco2.pagination import ScanListPagination

from .. import idempotency, services
from ..filters import ScanFilter
from ..models import Scan
from ..rules import get_taxonomy
from ..selectors import visible_scan
from ..serializers import (
    ScanAcceptedSerializer,
    ScanChooseSerializer,
    ScanCreateSerializer,
    ScanHintSerializer,
    ScanSerializer,
    TaxonomySerializer,
    scan_links,
)

logger = logging.getLogger(__name__)

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
    scan = visible_scan(request.user, task_id)
    if scan is None:
        raise NotFound("No scan with this task id.")
    return scan


class ScanListCreateView(generics.ListCreateAPIView):
    serializer_class = ScanSerializer
    # the history page's filters (status, category, dates, search); a bad value is a 400
    filter_backends = [DjangoFilterBackend]
    filterset_class = ScanFilter
    # links by position (keyset): the last page of a long history costs what the first does
    pagination_class = ScanListPagination

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
        description="Follow `next` and `previous` (cursor links): every page costs the same "
        "however long the history. `?page=N` still pages by number (an offset, up to the "
        "count's cap).",
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
        key = idempotency.read_key(request.headers)  # InvalidKey: 400 (api/exceptions.py)
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
        else:  # a reused key is a 422, one still running a 409 (api/exceptions.py)
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
        # InvalidAnswer is a 400 naming the field, ScanNotWaiting a 409 (api/exceptions.py)
        scan = self.resume(scan, form.validated_data, f"api:{request.user.get_username()}")
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
