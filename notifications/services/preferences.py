"""A user's notification preferences: their address and opt-in, saved together."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

from ..models import NotificationPreference

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def update_preferences(
    user: AbstractBaseUser, *, email: str, email_on_scan_completed: bool
) -> NotificationPreference:
    """Save the user's address and opt-in together (the page edits both at once)."""
    with transaction.atomic():
        if user.email != email:
            user.email = email
            user.save(update_fields=["email"])
        preference, _created = NotificationPreference.objects.update_or_create(
            user=user, defaults={"email_on_scan_completed": email_on_scan_completed}
        )
    return preference


def preferences_for(user: AbstractBaseUser) -> NotificationPreference:
    """The user's preferences; an unsaved default row when they never chose."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(
        user=user
    )
