"""Browser pages. Thin: forms in, services out, templates render selectors' data."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from . import services
from .forms import ScanUploadForm
from .models import Scan, ScanStatus, ScanStep
from .selectors import scans_visible_to
from .serializers import ScanSerializer


def _visible_scan_or_404(request, scan_id) -> Scan:
    scan = scans_visible_to(request.user).filter(pk=scan_id).first()
    if scan is None:
        raise Http404("No such scan.")
    return scan


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    form = ScanUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        scan = services.create_scan(
            owner=request.user, image=form.cleaned_data["image"], hint=form.cleaned_data["hint"]
        )
        return redirect("scans:detail", scan_id=scan.id)
    status = 400 if request.method == "POST" else 200
    return render(request, "scans/upload.html", {"form": form}, status=status)


PIPELINE_STAGES = (ScanStep.VISION, ScanStep.RULE, ScanStep.ANSWER)


def stage_states(scan: Scan) -> list[dict]:
    """Each pipeline stage with its state for the page: done, active, failed or waiting."""
    order = [s.value for s in PIPELINE_STAGES]
    current = (
        order.index(scan.step)
        if scan.step in order
        else (len(order) if scan.step == ScanStep.DONE else -1)
    )
    states = []
    for index, stage in enumerate(PIPELINE_STAGES):
        if index < current:
            state = "done"
        elif index == current:
            state = "failed" if scan.status == ScanStatus.FAILED else "active"
        else:
            state = "waiting"
        states.append({"code": stage.value, "label": stage.label, "state": state})
    return states


@login_required
@require_GET
def detail(request, scan_id):
    scan = _visible_scan_or_404(request, scan_id)
    return render(
        request,
        "scans/detail.html",
        {
            "scan": scan,
            "stages": stage_states(scan),
            "labels": {"status": dict(ScanStatus.choices), "step": dict(ScanStep.choices)},
            "scan_json": ScanSerializer(scan, context={"request": request}).data,
            "status_url": reverse("api:scan-detail", args=[scan.id]),
            "events_url": reverse("api:scan-events", args=[scan.id]),
        },
    )


@login_required
@require_GET
def history(request):
    scans = (
        Scan.objects.filter(owner=request.user).select_related("category").order_by("-created_at")
    )
    page = Paginator(scans, 20).get_page(request.GET.get("page"))
    return render(request, "scans/history.html", {"page": page})


@login_required
@require_GET
def image(request, scan_id):
    """The photo, to its owner and staff only (uploads are never public files)."""
    scan = _visible_scan_or_404(request, scan_id)
    # lists ask for the small copy; it exists once a worker has prepared the photo
    field = scan.thumbnail if request.GET.get("size") == "thumb" and scan.thumbnail else scan.image
    try:
        handle = field.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404("The photo is no longer available.") from None
    response = FileResponse(handle)
    response["Cache-Control"] = "private, max-age=3600"
    return response
