"""Reports for staff: the daily digest and the dead-letter warning (run by beat)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import Count
from django.utils import timezone

from .broker import dead_letter_depth
from .models import DeadLetter, Scan, ScanStatus
from .selectors import usage_totals


def daily_digest(day: date | None = None) -> tuple[str, str]:
    """Subject and body of the digest of ``day`` (default: yesterday), a calendar day in the
    site's time zone (Asia/Seoul): the day its subject names, midnight to midnight."""
    day = day or timezone.localdate() - timedelta(days=1)
    since = timezone.make_aware(datetime.combine(day, time.min))
    until = timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))
    scans = Scan.objects.filter(created_at__gte=since, created_at__lt=until)
    by_status = dict(scans.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    by_category = list(
        scans.filter(status=ScanStatus.COMPLETED)
        .values_list("category__middle_ko")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("category__middle_ko", "n")
    )
    totals = usage_totals(scans)
    failures = list(
        scans.filter(status=ScanStatus.FAILED)
        .values_list("error_code")
        .annotate(n=Count("id"))
        .order_by("-n")
        .values_list("error_code", "n")
    )
    examples = scans.filter(status=ScanStatus.FAILED).order_by("-created_at")[:10]
    lines = [
        f"Eco² — {day} ({since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} {since:%Z})",
        "",
        f"Scans: {scans.count()}  "
        + "  ".join(f"{status}: {by_status.get(status, 0)}" for status in ScanStatus.values),
        "",
        "By category (completed):",
        *([f"  {name or '미분류 (unclassified)'}: {n}" for name, n in by_category] or ["  -"]),
        "",
        "Failures by reason:",
        *([f"  {code}: {n}" for code, n in failures] or ["  none"]),
        *[f"  · {s.id} at {s.step}: {s.error_message}" for s in examples],
        "",
        f"Tokens: input {totals['input'] or 0} (cached {totals['cached_input'] or 0}), output {totals['output'] or 0}",
        f"Cost: ${(totals['cost'] or Decimal(0)):.4f}",
    ]
    subject = f"[Eco²] Daily digest {day}: {scans.count()} scans, {by_status.get(ScanStatus.FAILED, 0)} failed"
    return subject, "\n".join(lines) + "\n"


def dead_letter_summary() -> tuple[int, int | None]:
    """(pending dead letters in the DB, messages on scan.ai.dlq or None)."""
    try:
        depth = dead_letter_depth()
    except Exception:  # the broker being away must not hide the DB count
        depth = None
    return DeadLetter.objects.pending().count(), depth
