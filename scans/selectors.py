"""Read-only queries of the database: what a user may see (scans, batches), usage totals and
the running totals of all scans."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, QuerySet, Sum

from .models import Scan, ScanBatch, ScanStatus, ScanTotals

AnyUser = User | AnonymousUser  # request.user


def scans_visible_to(user: AnyUser) -> QuerySet[Scan]:
    """A user sees their own scans; staff see all. Nobody else sees anything."""
    if not user.is_authenticated:
        return Scan.objects.none()
    scans = Scan.objects.select_related("owner", "category")
    return scans if user.is_staff else scans.filter(owner=user)


def visible_scan(user: AnyUser, scan_id: object) -> Scan | None:
    """The scan with this id if ``user`` may see it; None for a malformed id, a scan of someone
    else or no scan at all (callers answer 404 alike, so ids of others do not leak)."""
    try:
        pk = uuid.UUID(str(scan_id))
    except ValueError:
        return None
    return scans_visible_to(user).filter(pk=pk).first()


def batches_visible_to(user: AnyUser) -> QuerySet[ScanBatch]:
    """A user sees their own batches; staff see all."""
    if not user.is_authenticated:
        return ScanBatch.objects.none()
    return ScanBatch.objects.all() if user.is_staff else ScanBatch.objects.filter(owner=user)


def visible_batch(user: AnyUser, batch_id: object) -> ScanBatch | None:
    """The batch with this id if ``user`` may see it (None otherwise, as ``visible_scan``)."""
    try:
        pk = uuid.UUID(str(batch_id))
    except ValueError:
        return None
    return batches_visible_to(user).filter(pk=pk).first()


def usage_totals(scans: QuerySet[Scan]) -> dict[str, Any]:
    """Provider tokens (input, cached_input, output) and cost (USD) summed over ``scans``;
    None where no scan has a value."""
    return scans.aggregate(
        input=Sum("input_tokens"),
        cached_input=Sum("cached_input_tokens"),
        output=Sum("output_tokens"),
        cost=Sum("cost_usd"),
    )


def running_totals() -> ScanTotals:
    """The running totals of all scans: the sum of ScanTotals' rows, unsaved (zeros before
    anything was counted)."""
    counters = [field.name for field in ScanTotals._meta.concrete_fields if not field.primary_key]
    sums = ScanTotals.objects.aggregate(**{name: Sum(name) for name in counters})
    return ScanTotals(**{name: value or 0 for name, value in sums.items()})


def active_scan_counts() -> dict[str, int]:
    """Scans queued and processing now: a range of the (status, updated_at) index, as long as
    the backlog, not the history (finished scans are never counted here)."""
    active = (ScanStatus.QUEUED, ScanStatus.PROCESSING)
    rows = (
        Scan.objects.filter(status__in=active)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    return {**dict.fromkeys(active, 0), **dict(rows)}
