from __future__ import annotations

import unicodedata
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .errors import error_message, retry_helps
from .fetch import MAX_URL_LENGTH, URLRefused, check_image_url
from .images import validate_scan_image
from .models import Scan, ScanStatus


def scan_result(scan: Scan, *, include_usage: bool = False) -> dict[str, Any] | None:
    """What a completed scan found: classification, the rules used and the guidance.

    Token counts and cost are operating data: only staff get them (``include_usage``).
    """
    if scan.status != ScanStatus.COMPLETED:
        return None
    result = {
        "outcome": scan.outcome,
        "classification": scan.classification,
        "disposal_rules": scan.matched_rules,
        "answer": scan.answer,
        "provider": scan.provider,
        "cache_hit": scan.vision_cache_hit,
        "answer_cache_hit": scan.answer_cache_hit,
    }
    if include_usage:
        result["usage"] = {
            "per_step": scan.usage,
            "vision_model": scan.vision_model,
            "answer_model": scan.answer_model,
            "prompt_version": scan.prompt_version,
            "input_tokens": scan.input_tokens,
            "cached_input_tokens": scan.cached_input_tokens,
            "output_tokens": scan.output_tokens,
            "cost_usd": str(scan.cost_usd),
        }
    return result


def scan_error(scan: Scan, *, include_detail: bool = False) -> dict[str, Any] | None:
    """Why a scan failed: its code, the message for that code in the active language and
    whether a retry can help. The stored technical detail is for staff (``include_detail``)."""
    if scan.status != ScanStatus.FAILED:
        return None
    error = {
        "code": scan.error_code,
        "message": error_message(scan.error_code),
        "retryable": retry_helps(scan.error_code),
        "step": scan.step,
    }
    if include_detail:
        error["detail"] = scan.error_message
    return error


class ScanErrorSerializer(serializers.Serializer):
    """Why a scan failed (``scan_error``)."""

    code = serializers.CharField()
    message = serializers.CharField(help_text="In the request's language, from the code.")
    retryable = serializers.BooleanField(help_text="Whether trying the same scan again can help.")
    step = serializers.CharField(help_text="The step that failed.")
    detail = serializers.CharField(required=False, help_text="Staff only: the technical detail.")


def validate_hint_text(value: str) -> None:
    """A hint is text a person typed: bytes that were not UTF-8 arrive as U+FFFD (the
    multipart parser replaces them) and control characters have no place in it."""
    if "\ufffd" in value:
        raise serializers.ValidationError(
            _("The hint is not valid UTF-8 text."), code="invalid_encoding"
        )
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value):
        raise serializers.ValidationError(
            _("The hint contains control characters."), code="control_characters"
        )


def validate_image_url(value: str) -> None:
    try:
        check_image_url(value)
    except URLRefused as exc:
        # the reason in the reader's language; the technical detail (the address) is not echoed
        raise serializers.ValidationError(error_message(exc.code), code=exc.code) from exc


class ScanCreateSerializer(serializers.Serializer):
    image = serializers.FileField(
        required=False,
        validators=[validate_scan_image],
        help_text="A JPEG, PNG, WebP, GIF, AVIF or HEIC/HEIF photo of one item "
        "(or give `image_url`).",
    )
    image_url = serializers.CharField(
        required=False,
        max_length=MAX_URL_LENGTH,
        trim_whitespace=False,
        validators=[validate_image_url],
        help_text="Instead of `image`: an http(s) address of the photo, fetched by the worker "
        "(public addresses only, at most 3 redirects, SCAN_IMAGE_MAX_BYTES).",
    )
    hint = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        validators=[validate_hint_text],
        help_text='Optional description, e.g. "투명 페트병, 라벨 있음".',
    )

    def to_internal_value(self, data):
        # one photo per scan: a second `image` part would otherwise be dropped silently
        if hasattr(data, "getlist") and len(data.getlist("image")) > 1:
            raise serializers.ValidationError(
                {"image": [_("Send one photo per scan; use /api/v1/scans/batch for several.")]},
                code="too_many_images",
            )
        return super().to_internal_value(data)

    def validate(self, attrs):
        has_image = attrs.get("image") is not None
        has_url = bool(attrs.get("image_url"))
        if has_image and has_url:
            raise serializers.ValidationError(
                {"non_field_errors": [_("Send either `image` or `image_url`, not both.")]},
                code="image_and_url",
            )
        if not has_image and not has_url:
            raise serializers.ValidationError(
                {"image": [_("Send a photo (`image`) or its address (`image_url`).")]},
                code="required",
            )
        return attrs


class ScanAcceptedSerializer(serializers.Serializer):
    task_id = serializers.UUIDField()
    status = serializers.CharField()
    status_url = serializers.CharField()
    events_url = serializers.CharField()


def scan_links(scan: Scan, request) -> dict[str, str]:
    return {
        "status_url": request.build_absolute_uri(reverse("api:scan-detail", args=[scan.id])),
        "events_url": request.build_absolute_uri(reverse("api:scan-events", args=[scan.id])),
    }


class ChoiceSerializer(serializers.Serializer):
    """One item a scan that is not sure offers, with its bin."""

    category_code = serializers.CharField(help_text="A code of GET /api/v1/categories.")
    item = serializers.CharField(help_text="The item, in Korean.")
    item_en = serializers.CharField(help_text="The item, in English.")
    category_ko = serializers.CharField(help_text="The bin (the category), in Korean.")
    category_en = serializers.CharField(help_text="The bin (the category), in English.")
    major_ko = serializers.CharField()
    major_en = serializers.CharField()
    kind = serializers.CharField()
    score = serializers.FloatField(
        allow_null=True, help_text="The provider's score for it (higher is likelier)."
    )


class QuestionSerializer(serializers.Serializer):
    """What a scan in status needs_input asks, and where to answer it."""

    reason = serializers.CharField(
        help_text="Why it is not sure: no_hint, ambiguous, low_confidence, or another reason "
        "its provider gave."
    )
    message = serializers.CharField(help_text="The question, in the request's language.")
    choices = ChoiceSerializer(
        many=True, help_text="Up to 4 items, best first; may be empty (no hint at all)."
    )
    choose_url = serializers.CharField(
        help_text='POST {"category_code": …, "item": …}: resume at the rule step.'
    )
    hint_url = serializers.CharField(
        help_text='POST {"hint": …}: recognise the photo again with this hint.'
    )


# lazy: rendered in the language of the request that shows them
QUESTION_MESSAGES = {
    "no_hint": gettext_lazy("What is it? Choose its bin, or describe it in a hint."),
    "ambiguous": gettext_lazy("Which one is it? Choose the item in your photo."),
}
QUESTION_DEFAULT = gettext_lazy("We are not sure what this is. Which one is it?")
# a photo alone on a server whose vision step reads only hints (the offline provider)
QUESTION_PHOTO_NOT_SEEN = gettext_lazy(
    "This server cannot see photos (offline mode), so a photo alone cannot be recognised. "
    "Describe the item in a hint, or choose its bin."
)


def question_message(scan: Scan) -> str:
    reason = question_reason(scan)
    if (
        reason == "no_hint"
        and not scan.hint
        and (scan.classification or {}).get("provider") == "offline"
    ):
        return str(QUESTION_PHOTO_NOT_SEEN)
    return str(QUESTION_MESSAGES.get(reason, QUESTION_DEFAULT))


def question_reason(scan: Scan) -> str:
    details = (scan.classification or {}).get("details") or {}
    return str(details.get("reason") or "low_confidence")


def scan_question(scan: Scan, request=None) -> dict[str, Any] | None:
    """What a scan that asks (status needs_input) offers; None for any other status."""
    if scan.status != ScanStatus.NEEDS_INPUT:
        return None
    reason = question_reason(scan)
    choose = reverse("api:scan-choose", args=[scan.id])
    hint = reverse("api:scan-hint", args=[scan.id])
    return {
        "reason": reason,
        "message": question_message(scan),
        "choices": scan.choices or [],
        "choose_url": request.build_absolute_uri(choose) if request else choose,
        "hint_url": request.build_absolute_uri(hint) if request else hint,
    }


class ScanSerializer(serializers.ModelSerializer):
    task_id = serializers.UUIDField(source="id", read_only=True)
    result = serializers.SerializerMethodField()
    question = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()

    class Meta:
        model = Scan
        fields = [
            "task_id",
            "status",
            "step",
            "progress",
            "hint",
            "language",
            "result",
            "question",
            "error",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(QuestionSerializer(allow_null=True))
    def get_question(self, scan: Scan) -> dict[str, Any] | None:
        return scan_question(scan, self.context.get("request"))

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_result(self, scan: Scan) -> dict[str, Any] | None:
        request = self.context.get("request")
        return scan_result(scan, include_usage=bool(request and request.user.is_staff))

    @extend_schema_field(ScanErrorSerializer(allow_null=True))
    def get_error(self, scan: Scan) -> dict[str, Any] | None:
        request = self.context.get("request")
        return scan_error(scan, include_detail=bool(request and request.user.is_staff))


class ScanChooseSerializer(serializers.Serializer):
    category_code = serializers.CharField(
        max_length=40,
        help_text="One of the offered choices' category_code, or any code of "
        "GET /api/v1/categories.",
    )
    item = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=120,
        help_text="Optional: the item, as offered (item or item_en) or as the rule base names it.",
    )


class ScanHintSerializer(serializers.Serializer):
    hint = serializers.CharField(
        max_length=settings.SCAN_HINT_MAX_LENGTH,
        validators=[validate_hint_text],
        help_text='What the item is, e.g. "유리병" or "broken glass bottle". It replaces the '
        "scan's hint; the photo is recognised again (with OpenAI: a new, paid call).",
    )


class TaxonomySerializer(serializers.Serializer):
    major_ko = serializers.CharField()
    major_en = serializers.CharField()
    categories = serializers.ListField(child=serializers.DictField())
