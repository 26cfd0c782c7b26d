"""The notification settings page. Thin: form in, service out."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from . import services
from .forms import NotificationPreferencesForm


@login_required
@require_http_methods(["GET", "POST"])
def preferences(request):
    current = services.preferences_for(request.user)
    initial = {
        "email": request.user.email,
        "email_on_scan_completed": current.email_on_scan_completed,
    }
    form = NotificationPreferencesForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        services.update_preferences(
            request.user,
            email=form.cleaned_data["email"],
            email_on_scan_completed=form.cleaned_data["email_on_scan_completed"],
        )
        messages.success(request, _("Your notification settings were saved."))
        return redirect("notifications:preferences")
    status = 400 if request.method == "POST" else 200
    return render(request, "notifications/preferences.html", {"form": form}, status=status)
