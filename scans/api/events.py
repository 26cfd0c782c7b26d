"""The live progress of a scan as Server-Sent Events (``GET /api/v1/scans/<id>/events``): a plain
async Django view, so that an open stream costs a coroutine, not a thread; it authenticates
with the API's classes and is added to the OpenAPI schema by scans/openapi.py."""

from __future__ import annotations

import uuid

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from .. import events
from ..models import Scan
from ..selectors import scans_visible_to
from ..serializers import ScanSerializer


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
    after the final event of the scan's current run (``Last-Event-ID: final:<run>``) gets 204,
    which tells it to stop; one that saw an earlier run's end gets the stream of the new one.
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
    if scan.is_terminal and last_event_id == events.final_event_id(scan.celery_root_id):
        return HttpResponse(status=204)  # this run's end was sent: stop

    def final_payload() -> tuple[dict, str]:
        fresh = Scan.objects.select_related("owner", "category").get(pk=scan.pk)
        payload = ScanSerializer(fresh, context={"request": api_request}).data
        return payload, events.final_event_id(fresh.celery_root_id)

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
