"""Scans in each state for the page and event-stream tests (rows made directly: no pipeline
runs) and clients of the pages: logged in, reading English."""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from scans.models import Category, Scan, ScanOutcome, ScanStatus, ScanStep
from scans.rules import match_rules
from tests.conftest import make_photo_bytes


def make_scan(owner, **fields) -> Scan:
    image = SimpleUploadedFile("item.jpg", make_photo_bytes(), content_type="image/jpeg")
    return Scan.objects.create(owner=owner, image=image, **fields)


def completed_scan(owner, *, code="pet_clear", tags=("label_attached",), **fields) -> Scan:
    category = Category.objects.get(code=code)
    classification = {
        "major_category": category.major_ko,
        "middle_category": category.middle_ko,
        "minor_category": category.items.order_by("pk").first().name_ko,
        "category_code": code,
        "situation_tags": list(tags),
        "confidence": 1.0,
        "user_input": "투명 페트병, 라벨 있음",
    }
    rules = match_rules(classification)
    answer = {
        "disposal_steps": [step["ko"] for step in rules["steps"]],
        "insufficiencies": [fix["ko"] for fix in rules["fixes"]],
        "user_answer": f"{category.middle_ko}(으)로 배출해요.",
    }
    values = {
        "status": ScanStatus.COMPLETED,
        "step": ScanStep.DONE,
        "progress": 100,
        "classification": classification,
        "matched_rules": rules,
        "answer": answer,
        "category": category,
        "outcome": ScanOutcome.CLASSIFIED,
        "provider": "offline",
        "hint": "투명 페트병, 라벨 있음",
        "finished_at": timezone.now(),
        **fields,
    }
    return make_scan(owner, **values)


def failed_scan(owner, *, code="internal_error", **fields) -> Scan:
    values = {
        "status": ScanStatus.FAILED,
        "step": ScanStep.VISION,
        "progress": 10,
        "error_code": code,
        "error_message": "An unexpected error stopped the recognition step (RuntimeError).",
        "finished_at": timezone.now(),
        **fields,
    }
    return make_scan(owner, **values)


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def english(client: Client) -> Client:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client
