"""The batch endpoints of the REST API: several photos in one request (one chord of pipelines
with a summary at the end), and the batch's per-item state."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..batch_serializers import (
    BatchAcceptedSerializer,
    BatchCreateSerializer,
    BatchDetailSerializer,
    batch_detail,
)
from ..selectors import visible_batch
from .scans import CREATE_ERRORS


class BatchCreateView(APIView):
    @extend_schema(
        request=BatchCreateSerializer,
        responses={202: BatchAcceptedSerializer, **CREATE_ERRORS},
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
        responses={
            200: BatchDetailSerializer,
            404: OpenApiResponse(description="No batch with this id (or not yours)"),
        },
        summary="Per-item status, batch progress and summary",
    )
    def get(self, request, batch_id: str):
        batch = visible_batch(request.user, batch_id)
        if batch is None:
            raise NotFound("No batch with this id.")
        return Response(batch_detail(batch, include_detail=request.user.is_staff))
