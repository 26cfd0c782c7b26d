"""The batch endpoints' serializers: the upload of several photos, and the typed answers (the
202 of a batch, its per-item state, progress and summary) that the OpenAPI schema describes."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from .errors import error_message
from .images import validate_scan_image
from .models import BatchStatus, ScanStatus
from .serializers import ScanErrorSerializer, scan_error, validate_hint_text


class BatchCreateSerializer(serializers.Serializer):
    images = serializers.ListField(
        child=serializers.FileField(validators=[validate_scan_image]),
        min_length=1,
        max_length=settings.SCAN_BATCH_MAX_IMAGES,
        help_text="Several photos, one item each (repeat the `images` field).",
    )
    hint = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        validators=[validate_hint_text],
    )


def batch_summary(summary: dict | None, *, include_detail: bool = False) -> dict | None:
    """The stored batch summary with each failure's message rendered from its code in the
    active language (the summary is written by a worker, in no reader's language)."""
    if not summary:
        return summary
    failures = []
    for failure in summary.get("failures") or []:
        stored = failure.get("message", "")
        rendered = {**failure, "message": error_message(failure.get("code", ""))}
        if include_detail:
            rendered["detail"] = stored
        failures.append(rendered)
    return {**summary, "failures": failures}


def batch_detail(batch, *, include_detail: bool = False) -> dict[str, Any]:
    """A batch as its owner sees it: per-item state and the batch's own progress.
    ``include_detail``: staff also get the technical detail of each failure."""
    items = [
        {
            "task_id": str(scan.id),
            "status": scan.status,
            "step": scan.step,
            "progress": scan.progress,
            "category_code": scan.category.code if scan.category else None,
            "error": scan_error(scan, include_detail=include_detail),
        }
        for scan in batch.scans.select_related("category").order_by("created_at", "id")
    ]
    ended = {ScanStatus.COMPLETED, ScanStatus.FAILED, ScanStatus.NEEDS_INPUT}
    done = sum(item["status"] in ended for item in items)
    return {
        "batch_id": str(batch.id),
        "status": batch.status,
        # a failed item, or one that asks which one it is, has ended as much as a completed one
        "progress": round(
            sum(100 if item["status"] in ended else item["progress"] for item in items)
            / max(1, len(items))
        ),
        "finished": done,
        "total": len(items),
        "items": items,
        "summary": batch_summary(batch.summary, include_detail=include_detail),
        # as every other timestamp of the API: in the site's time zone (Asia/Seoul)
        "created_at": _timestamp(batch.created_at),
        "completed_at": _timestamp(batch.completed_at),
    }


def _timestamp(value) -> str | None:
    return None if value is None else serializers.DateTimeField().to_representation(value)


# --- the answers, typed for the schema (batch_detail and the 202 build them) ------------------
class BatchAcceptedSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=BatchStatus.choices)
    status_url = serializers.URLField(help_text="GET it for per-item status and the summary.")
    task_ids = serializers.ListField(
        child=serializers.UUIDField(), help_text="One scan per photo, in upload order."
    )


class BatchItemSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ScanStatus.choices)
    step = serializers.CharField()
    progress = serializers.IntegerField(min_value=0, max_value=100)
    category_code = serializers.CharField(allow_null=True)
    error = ScanErrorSerializer(allow_null=True)


class BatchFailureSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    code = serializers.CharField()
    message = serializers.CharField(help_text="In the request's language, from the code.")
    detail = serializers.CharField(required=False, help_text="Staff only: the technical detail.")


class BatchSummarySerializer(serializers.Serializer):
    count = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    asked = serializers.IntegerField(help_text="Members that ended asking which one it is.")
    by_category = serializers.DictField(
        child=serializers.IntegerField(), help_text="Completed members per category code."
    )
    failures = BatchFailureSerializer(many=True)
    total_cost_usd = serializers.DecimalField(
        max_digits=12, decimal_places=6, coerce_to_string=True
    )


class BatchDetailSerializer(serializers.Serializer):
    batch_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=BatchStatus.choices)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    finished = serializers.IntegerField(help_text="Members that ended (any final state).")
    total = serializers.IntegerField()
    items = BatchItemSerializer(many=True)
    summary = BatchSummarySerializer(
        allow_null=True, help_text="Written when the last member ends; null until then."
    )
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
