"""Browser pages. Thin: forms in, services out, templates render selectors' data."""

from __future__ import annotations

import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import events, services
from .creation_rate import ScanRateLimited
from .errors import error_message, retry_helps
from .filters import ScanFilter
from .forms import HintForm, ScanUploadForm
from .models import Category, Item, Scan, ScanOutcome, ScanStatus, ScanStep
from .providers import vision_sees_photos
from .providers.base import rules_language
from .providers.offline import rule_answer
from .selectors import scans_visible_to
from .serializers import ScanSerializer, question_message


def _visible_scan_or_404(request, scan_id) -> Scan:
    scan = scans_visible_to(request.user).filter(pk=scan_id).first()
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


PIPELINE_STAGES = (ScanStep.VISION, ScanStep.RULE, ScanStep.ANSWER)
# short names of the stages under the progress bar (the step labels say what is happening now)
STAGE_LABELS = {
    ScanStep.VISION: gettext_lazy("Recognition"),
    ScanStep.RULE: gettext_lazy("Rules"),
    ScanStep.ANSWER: gettext_lazy("Guidance"),
}


def stage_states(scan: Scan) -> list[dict]:
    """Each pipeline stage with its state for the page: done, active, failed, asking (the rule
    stage of a scan that asks which one it is) or waiting."""
    order = [s.value for s in PIPELINE_STAGES]
    if scan.step == ScanStep.INPUT:
        current = order.index(ScanStep.RULE)
    elif scan.step == ScanStep.DONE:
        current = len(order)
    else:
        current = order.index(scan.step) if scan.step in order else -1
    states = []
    for index, stage in enumerate(PIPELINE_STAGES):
        if index < current:
            state = "done"
        elif index == current:
            state = {ScanStatus.FAILED: "failed", ScanStatus.NEEDS_INPUT: "asking"}.get(
                scan.status, "active"
            )
        else:
            state = "waiting"
        states.append({"code": stage.value, "label": STAGE_LABELS[stage], "state": state})
    return states


def failure_info(scan: Scan, *, staff: bool = False) -> dict | None:
    """Why the scan failed, in the page's language, from its error code (scans.errors); the
    stored technical detail only for staff."""
    if scan.status != ScanStatus.FAILED:
        return None
    return {
        "reason": error_message(scan.error_code),
        "detail": scan.error_message if staff else "",
        "code": scan.error_code,
        "step": STAGE_LABELS.get(scan.step)
        or (ScanStep(scan.step).label if scan.step in ScanStep.values else scan.step),
        # nothing to retry: the photo (or the address) itself is the problem
        "photo_problem": not retry_helps(scan.error_code),
    }


def can_retry(scan: Scan, user) -> bool:
    return (
        scan.status == ScanStatus.FAILED
        and scan.owner_id == user.pk
        and retry_helps(scan.error_code)
    )


def _category_names(language: str) -> dict[str, str]:
    field = "middle_en" if language == "en" else "middle_ko"
    return dict(Category.objects.values_list("code", field))


CERTAIN = 0.97  # at or above: "sure"; from SCAN_MATCH_CONFIDENT up to here: "almost sure"


def certainty(classification: dict) -> dict:
    """How sure the answer is, in words a person understands, from the classification's
    ``confidence`` (or the owner's own choice). Below SCAN_MATCH_CONFIDENT the card marks the
    answer as a guess: a classified result that weak should have asked, and if one still
    reaches the card it must not look like a certain one."""
    if classification.get("chosen_by") == "user":
        return {"level": "chosen", "label": _("You chose this"), "uncertain": False}
    try:
        confidence = float(classification.get("confidence") or 0)
    except (TypeError, ValueError):
        confidence = 0.0
    if confidence >= max(CERTAIN, settings.SCAN_MATCH_CONFIDENT):
        return {"level": "certain", "label": _("Sure"), "uncertain": False}
    if confidence >= settings.SCAN_MATCH_CONFIDENT:
        return {"level": "likely", "label": _("Almost sure"), "uncertain": False}
    return {"level": "unsure", "label": _("Not sure"), "uncertain": True}


def result_card(scan: Scan, *, language: str, staff: bool) -> dict | None:
    """What the result card shows, in the page's language.

    In the scan's own language (the one its guidance is written in): the guidance as written
    (steps, what to fix, the short answer). In the other one (a Korean scan read in English, an
    English one in Korean): the rules' own answer in the page's language (the rule base's
    steps and fixes, the item's bin, its conditions); the written answer is kept as
    "original guidance".
    """
    if scan.status != ScanStatus.COMPLETED:
        return None
    english = language == "en"
    classification = scan.classification or {}
    rules = scan.matched_rules or {}
    answer = scan.answer or {}
    card: dict = {
        "english": english,
        "classified": scan.outcome == ScanOutcome.CLASSIFIED and bool(rules),
        # "classified from your hint": not said of a category the owner chose
        "offline": scan.provider == "offline" and classification.get("chosen_by") != "user",
        "provider": scan.provider,
    }
    if card["classified"]:
        card["major"] = rules.get("major_en" if english else "major_ko", "")
        card["middle"] = rules.get("middle_en" if english else "middle_ko", "")
        minor = classification.get("minor_category") or ""
        if minor and english:
            minor = (
                Item.objects.filter(name_ko=minor, category__code=rules.get("category_code"))
                .values_list("name_en", flat=True)
                .first()
                or minor
            )
        card["minor"] = minor
        card["certainty"] = certainty(classification)
        card["summary"] = rules.get("summary_en" if english else "summary_ko", "")
        goes_to = _category_names(language)
        card["exclusions"] = [
            {
                "name": ex.get("en" if english else "ko") or ex.get("ko", ""),
                "goes_to": goes_to.get(ex.get("goes_to"), ex.get("goes_to_ko", "")),
                "note": ex.get("note_en" if english else "note_ko", ""),
            }
            for ex in rules.get("exclusions") or []
        ]
    page_language = rules_language(language)
    if page_language != rules_language(scan.language):
        # written in the other language (a Korean scan read in English, or the other way):
        # the rules' own answer in the page's language, the written one kept as the original
        if card["classified"]:
            shown = rule_answer(classification, rules, page_language)
            card["steps"] = shown["disposal_steps"]
            card["fixes"] = shown["insufficiencies"]
            card["answer"] = shown["user_answer"]
        else:
            card["steps"], card["fixes"] = [], []
            card["answer"] = _(
                "We could not tell what this is. Describe the item in the hint, for example "
                "“clear PET bottle, label on”, and scan again."
            )
        card["original_answer"] = answer.get("user_answer", "")
        card["original_language"] = rules_language(scan.language)
    else:
        card["steps"] = answer.get("disposal_steps") or []
        card["fixes"] = answer.get("insufficiencies") or []
        card["answer"] = answer.get("user_answer", "")
    if staff:
        card["usage"] = {
            "cost_usd": format(scan.cost_usd.normalize(), "f"),  # exact, no trailing zeros
            "input_tokens": scan.input_tokens,
            "cached_input_tokens": scan.cached_input_tokens,
            "output_tokens": scan.output_tokens,
            "models": " / ".join(
                dict.fromkeys(m for m in (scan.vision_model, scan.answer_model) if m)
            ),
            "cache_hit": scan.vision_cache_hit,
            "answer_cache_hit": scan.answer_cache_hit,
        }
    return card


def question_card(scan: Scan, *, language: str) -> dict | None:
    """What a scan that asks which one it is (status needs_input) shows: the question, its
    choices as one-tap buttons (the item and its bin, in the page's language), every category
    for "none of these", and the hint form."""
    if scan.status != ScanStatus.NEEDS_INPUT:
        return None
    english = language == "en"
    choices = []
    for choice in scan.choices or []:
        item = (choice.get("item_en") if english else None) or choice.get("item", "")
        bin_ = choice.get("category_en" if english else "category_ko", "")
        if item == bin_:  # offered as the category itself: say where it belongs instead
            bin_ = choice.get("major_en" if english else "major_ko", "")
        choices.append({**choice, "name": item, "bin": bin_})
    name = "middle_en" if english else "middle_ko"
    return {
        "message": question_message(scan),
        "choices": choices,
        "categories": list(Category.objects.values_list("code", name)),
        "offline": scan.provider == "offline",
        "hint_max_length": settings.SCAN_HINT_MAX_LENGTH,
    }


RETRYING_ONE = "Retrying: %(counter)s failed attempt so far."
RETRYING_OTHER = "Retrying: %(counter)s failed attempts so far."


def live_labels() -> dict:
    """Labels for static/scan.js, in the page's language."""
    return {
        "status": dict(ScanStatus.choices),
        "step": dict(ScanStep.choices),
        # the same messages as the page's: %(counter)s is the number of failed attempts
        "retrying": {
            "one": ngettext(RETRYING_ONE, RETRYING_OTHER, 1),
            "other": ngettext(RETRYING_ONE, RETRYING_OTHER, 2),
        },
        "last_error": _("Last error"),
        "failed": _("The scan failed"),
        "loading": _("Loading the result…"),
        "resuming": _("Going on with your answer…"),
        "answer_failed": _("Your answer could not be sent. Try again."),
    }


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
    page = Paginator(scan_filter.qs, 20).get_page(request.GET.get("page"))
    for scan in page:
        scan.can_retry = can_retry(scan, request.user)
        scan.failure = failure_info(scan)
    return render(
        request,
        "scans/history.html",
        {"page": page, "form": scan_filter.form, "filtered": scan_filter.has_filters()},
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
    """The photo, to its owner and staff only (uploads are never public files)."""
    scan = _visible_scan_or_404(request, scan_id)
    # lists ask for the small copy; it exists once a worker has prepared the photo
    field = scan.thumbnail if request.GET.get("size") == "thumb" and scan.thumbnail else scan.image
    try:
        handle = field.open("rb")
    except (FileNotFoundError, ValueError):
        raise Http404(_("The photo is no longer available.")) from None
    response = FileResponse(handle)
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- live progress (Server-Sent Events) ----------------------------------------------------
def _api_request(request):
    """The request as the REST API sees it: session, token or a test's forced login."""
    from rest_framework.request import Request
    from rest_framework.settings import api_settings

    return Request(
        request, authenticators=[auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    )


def _authenticate(request):
    """(api_request, user) or (None, None) when the credentials are wrong."""
    from rest_framework.exceptions import AuthenticationFailed

    api_request = _api_request(request)
    try:
        return api_request, api_request.user
    except AuthenticationFailed:
        return None, None


async def scan_events(request, task_id: str):
    """Live progress of a scan as Server-Sent Events (``api:scan-events``).

    Under ASGI the stream is an async generator: an open stream costs a coroutine, not a
    thread. The owner and staff may follow a scan; anybody else gets 404, as for the scan
    itself; no credentials at all is 403, as on the rest of the API. A client that reconnects
    after the final event (``Last-Event-ID: final``) gets 204, which tells it to stop.
    """
    if request.method != "GET":
        return JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
    api_request, user = await sync_to_async(_authenticate)(request)
    if user is None:
        return JsonResponse({"detail": "Invalid token."}, status=401)
    if not user.is_authenticated:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=403)
    try:
        scan_id = uuid.UUID(str(task_id))
    except ValueError:
        scan_id = None
    scan = await scans_visible_to(user).filter(pk=scan_id).afirst() if scan_id else None
    if scan is None:
        return JsonResponse({"detail": "No scan with this task id."}, status=404)

    last_event_id = request.headers.get("Last-Event-ID") or None
    if last_event_id == events.FINAL_EVENT_ID and scan.is_terminal:
        return HttpResponse(status=204)

    def final_payload():
        fresh = Scan.objects.select_related("owner", "category").get(pk=scan.pk)
        return ScanSerializer(fresh, context={"request": api_request}).data

    if isinstance(request, ASGIRequest):

        async def afinal_payload():
            return await sync_to_async(final_payload)()

        stream = events.async_scan_event_stream(
            str(scan.id), afinal_payload, last_event_id=last_event_id
        )
    else:  # WSGI or the test client: a plain iterator, read in the server's thread
        stream = events.scan_event_stream(str(scan.id), final_payload, last_event_id=last_event_id)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
