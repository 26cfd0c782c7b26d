"""The texts of the e-mails: subject and plain-text body, Korean then English."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.urls import reverse

if TYPE_CHECKING:
    from scans.models import Scan

ANSWER_EXCERPT_CHARS = 300


def _one_line(text: str) -> str:
    # a newline in a subject would be a header injection (Django refuses to send it)
    return " ".join(str(text).split())


def _absolute(path: str) -> str:
    return f"{settings.SITE_URL.rstrip('/')}{path}" if settings.SITE_URL else path


def _excerpt(text: str, limit: int = ANSWER_EXCERPT_CHARS) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def scan_completed_message(scan: Scan) -> tuple[str, str]:
    """Subject and plain-text body (Korean, then English) for a finished scan."""
    category = scan.category
    category_ko = category.middle_ko if category else "분류하지 못함"
    category_en = category.middle_en if category else "not classified"
    answer = _excerpt((scan.answer or {}).get("user_answer", ""))
    link = _absolute(reverse("scans:detail", args=[scan.id]))
    settings_link = _absolute(reverse("notifications:preferences"))
    name = scan.owner.get_username()
    subject = _one_line(f"[Eco²] 스캔 완료 · Scan finished: {category_ko} ({category_en})")
    lines = [
        f"{name}님, 사진 스캔이 끝났습니다.",
        f"분류: {category_ko}",
    ]
    if answer:
        lines.append(f"안내: {answer}")
    lines += [
        f"자세한 배출 방법: {link}",
        "",
        f"Hello {name}, your scan is finished.",
        f"Category: {category_en} ({category_ko})",
    ]
    if answer:
        lines.append(f"Guidance (Korean): {answer}")
    lines += [
        f"All the steps: {link}",
        "",
        "--",
        f"알림 설정 · Notification settings: {settings_link}",
    ]
    return subject, "\n".join(lines) + "\n"


def scan_needs_input_message(scan: Scan) -> tuple[str, str]:
    """Subject and plain-text body (Korean, then English) for a scan that asks which one it
    is: the owner's choice (on the scan page) resumes it."""
    link = _absolute(reverse("scans:detail", args=[scan.id]))
    settings_link = _absolute(reverse("notifications:preferences"))
    name = scan.owner.get_username()
    choices = scan.choices or []
    subject = _one_line("[Eco²] 어느 쪽인지 골라 주세요 · Your scan needs your choice")
    lines = [
        f"{name}님, 사진 속 물건이 무엇인지 확실하지 않아요. 골라 주시면 이어서 안내해 드릴게요.",
    ]
    lines += [f"  - {c.get('item')} → {c.get('category_ko')}" for c in choices]
    lines += [
        f"고르기: {link}",
        "",
        f"Hello {name}, we are not sure what the item in your photo is. Choose one and the "
        "scan goes on.",
    ]
    lines += [f"  - {c.get('item_en') or c.get('item')} → {c.get('category_en')}" for c in choices]
    lines += [
        f"Choose: {link}",
        "",
        "--",
        f"알림 설정 · Notification settings: {settings_link}",
    ]
    return subject, "\n".join(lines) + "\n"
