"""The REST API (DRF). Views are thin: validate, call a service or selector, serialize."""

from __future__ import annotations

import uuid

from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .events import scan_event_stream
from .models import Scan, ScanBatch
from .selectors import get_taxonomy, scans_visible_to
from .serializers import (
    BatchCreateSerializer,
    ScanAcceptedSerializer,
    ScanCreateSerializer,
    ScanSerializer,
    TaxonomySerializer,
    batch_detail,
    scan_links,
)


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


class ScanListCreateView(generics.ListCreateAPIView):
    serializer_class = ScanSerializer

    def get_queryset(self):
        return Scan.objects.filter(owner=self.request.user).order_by("-created_at")

    @extend_schema(
        request=ScanCreateSerializer,
        responses={202: ScanAcceptedSerializer, 400: OpenApiResponse(description="Invalid upload")},
        summary="Upload a photo; the pipeline runs in the background",
    )
    def post(self, request, *args, **kwargs):
        form = ScanCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        scan = services.create_scan(
            owner=request.user,
            image=form.validated_data["image"],
            hint=form.validated_data.get("hint", ""),
        )
        links = scan_links(scan, request)
        body = {"task_id": str(scan.id), "status": scan.status, **links}
        return Response(
            body, status=status.HTTP_202_ACCEPTED, headers={"Location": links["status_url"]}
        )


class ScanDetailView(APIView):
    @extend_schema(responses=ScanSerializer, summary="Status, step, progress and result of a scan")
    def get(self, request, task_id: str):
        scan = get_visible_scan(request, task_id)
        return Response(ScanSerializer(scan, context={"request": request}).data)


class EventStreamRenderer(BaseRenderer):
    media_type = "text/event-stream"
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class ScanEventsView(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    @extend_schema(
        responses={(200, "text/event-stream"): OpenApiTypes.STR},
        summary="Live progress as Server-Sent Events (progress, then completed or failed)",
    )
    def get(self, request, task_id: str):
        scan = get_visible_scan(request, task_id)

        def final_payload():
            scan.refresh_from_db()
            return ScanSerializer(scan, context={"request": request}).data

        response = StreamingHttpResponse(
            scan_event_stream(str(scan.id), final_payload), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
        return response


class CategoriesView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses=TaxonomySerializer(many=True),
        summary="The taxonomy (majors → categories → items)",
    )
    def get(self, request):
        return Response(get_taxonomy())


class BatchCreateView(APIView):
    @extend_schema(
        request=BatchCreateSerializer,
        responses={202: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="Invalid upload")},
        summary="Upload several photos; one chord of pipelines with a batch summary at the end",
    )
    def post(self, request):
        form = BatchCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        batch = services.create_batch(
            owner=request.user,
            images=form.validated_data["images"],
            hint=form.validated_data.get("hint", ""),
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
        return Response(batch_detail(batch))
