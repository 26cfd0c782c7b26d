"""Browser pages. Thin: forms in, services out, templates render what scans/presenters.py shapes."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import FileSystemStorage
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from eco2 import pagination

from . import events, services
from .creation_rate import ScanRateLimited
from .filters import ScanFilter
from .forms import HintForm, ScanUploadForm
from .models import Scan, ScanStatus
from .presenters import (
    can_retry,
    failure_info,
    live_labels,
    question_card,
    result_card,
    stage_states,
)
from .providers import vision_sees_photos
from .selectors import visible_scan


def _visible_scan_or_404(request, scan_id) -> Scan:
    scan = visible_scan(request.user, scan_id)
    if scan is None:
        raise Http404(_("No such scan."))
    return scan


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    photo_is_seen = vision_sees_photos()
    form = ScanUploadForm(request.POST or None, request.FILES or None, photo_is_seen=photo_is_seen)
    status, retry_after = (400 if request.method == "POST" else 200), None
    if request.method == "POST" and form.is_valid():
        try:
            scan = services.create_scan(
                owner=request.user,
                image=form.cleaned_data["image"],
                hint=form.cleaned_data["hint"],
                language=request.LANGUAGE_CODE,
            )
        except services.PipelineBusy as busy:
            form.add_error(None, busy.message)
            status, retry_after = 503, busy.retry_after
        except ScanRateLimited as limited:
            form.add_error(None, limited.message)
            status, retry_after = 429, limited.retry_after
        else:
            return redirect("scans:detail", scan_id=scan.id)
    context = {
        "form": form,
        "max_bytes": settings.SCAN_IMAGE_MAX_BYTES,
        "photo_is_seen": photo_is_seen,
    }
    response = render(request, "scans/upload.html", context, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@login_required
@require_GET
def detail(request, scan_id):
    scan = _visible_scan_or_404(request, scan_id)
    language = translation.get_language()
    retries = events.step_retries(str(scan.id), scan.step) if not scan.is_terminal else None
    return render(
        request,
        "scans/detail.html",
        {
            "scan": scan,
            "stages": stage_states(scan),
            "labels": live_labels(),
            "card": result_card(scan, language=language, staff=request.user.is_staff),
            "question": question_card(scan, language=language),
            "failure": failure_info(scan, staff=request.user.is_staff),
            "can_retry": can_retry(scan, request.user),
            "retries": retries,
            "status_url": reverse("api:scan-detail", args=[scan.id]),
            "events_url": reverse("api:scan-events", args=[scan.id]),
            "choose_url": reverse("api:scan-choose", args=[scan.id]),
            "hint_url": reverse("api:scan-hint", args=[scan.id]),
        },
    )


@login_required
@require_GET
def history(request):
    scans = (
        Scan.objects.filter(owner=request.user).select_related("category").order_by("-created_at")
    )
    # the same filters as GET /api/v1/scans; here the valid ones apply and the others show
    # their error beside the field
    scan_filter = ScanFilter(request.GET or None, queryset=scans, request=request)
    # newer and older pages by position, as the API's links: any page costs what the first
    # does, however long the history (issue 22 §4); the count stops at COUNT_CAP
    pages = pagination.NewestFirstCursorPagination()
    try:
        page = pages.paginate_queryset(scan_filter.qs, Request(request))
    except NotFound:  # a cursor that is not one of ours
        raise Http404(_("No such page.")) from None
    for scan in page:
        scan.can_retry = can_retry(scan, request.user)
        scan.failure = failure_info(scan)
    count = pagination.bounded_count(scan_filter.qs)
    return render(
        request,
        "scans/history.html",
        {
            "scans": page,
            "count": min(count, pagination.COUNT_CAP),
            "more_than_count": count > pagination.COUNT_CAP,
            "newer_url": pages.get_previous_link(),
            "older_url": pages.get_next_link(),
            "form": scan_filter.form,
            "filtered": scan_filter.has_filters(),
        },
    )


@login_required
@require_POST
def retry(request, scan_id):
    """Resume the owner's failed scan at the step that failed, then show it."""
    scan = Scan.objects.filter(pk=scan_id, owner=request.user).first()
    if scan is None:
        raise Http404(_("No such scan."))
    if scan.status != ScanStatus.FAILED:
        messages.info(request, _("Only a failed scan can be retried."))
    elif not can_retry(scan, request.user):  # the check that shows the button
        messages.info(request, _("Trying again would fail the same way: upload another photo."))
    elif services.retry_scans([scan.id], actor=f"web:{request.user.username}"):
        messages.success(request, _("The scan was sent again."))
    else:  # someone else retried it in the same moment
        messages.info(request, _("The scan is already being retried."))
    return redirect("scans:detail", scan_id=scan.id)


@login_required
@require_POST
def choose(request, scan_id):
    """The page's answer to "which one is it?" without JavaScript (the page's script uses the
    API): resume the scan with the chosen category, then show it."""
    scan = _visible_scan_or_404(request, scan_id)
    actor = f"web:{request.user.get_username()}"
    return _answer(
        request,
        scan,
        lambda: services.choose_category(
            scan,
            category_code=request.POST.get("category_code", ""),
            item=request.POST.get("item", ""),
            actor=actor,
        ),
    )


@login_required
@require_POST
def add_hint(request, scan_id):
    """A hint instead of a choice: the photo is recognised again with it."""
    scan = _visible_scan_or_404(request, scan_id)
    form = HintForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
        return redirect("scans:detail", scan_id=scan.id)
    actor = f"web:{request.user.get_username()}"
    return _answer(
        request,
        scan,
        lambda: services.rerun_with_hint(scan, hint=form.cleaned_data["hint"], actor=actor),
    )


def _answer(request, scan: Scan, resume):
    try:
        resume()
    except (services.InvalidAnswer, services.ScanNotWaiting) as refused:
        messages.error(request, refused.message)
    return redirect("scans:detail", scan_id=scan.id)


@login_required
@require_GET
def image(request, scan_id):
    """The photo, to its owner and staff only (uploads are never public files): streamed from
    the local file system, or, from a private bucket, a redirect to a URL signed for
    AWS_QUERYSTRING_EXPIRE seconds (settings/media.py); never a public address."""
    scan = _visible_scan_or_404(request, scan_id)
    # lists ask for the small copy; it exists once a worker has prepared the photo
    field = scan.thumbnail if request.GET.get("size") == "thumb" and scan.thumbnail else scan.image
    gone = Http404(_("The photo is no longer available."))
    if not field:  # forgotten by retention
        raise gone
    if not isinstance(field.storage, FileSystemStorage):
        response = HttpResponseRedirect(field.url)  # S3Storage.url() signs it
        # the browser may reuse the redirect while the signature has time left
        response["Cache-Control"] = f"private, max-age={settings.AWS_QUERYSTRING_EXPIRE // 2}"
        return response
    try:
        handle = field.open("rb")
    except FileNotFoundError:
        raise gone from None
    response = FileResponse(handle)
    response["Cache-Control"] = "private, max-age=3600"
    return response
