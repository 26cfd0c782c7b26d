"""Read-only queries: what a user may see."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Scan


def scans_visible_to(user) -> QuerySet[Scan]:
    """A user sees their own scans; staff see all. Nobody else sees anything."""
    if not user.is_authenticated:
        return Scan.objects.none()
    scans = Scan.objects.select_related("owner", "category")
    return scans if user.is_staff else scans.filter(owner=user)
