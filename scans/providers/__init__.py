"""Providers for the vision and answer steps, chosen by settings."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from .base import AnswerProvider, VisionProvider


@cache
def _build(dotted_path: str):
    return import_string(dotted_path)()


def get_vision_provider() -> VisionProvider:
    return _build(settings.SCAN_VISION_PROVIDER)


def get_answer_provider() -> AnswerProvider:
    return _build(settings.SCAN_ANSWER_PROVIDER)


def vision_sees_photos() -> bool:
    """Whether the configured vision step looks at the photo (not the offline provider)."""
    return getattr(get_vision_provider(), "sees_photos", True)
