"""The upload size limit: a scan upload over it is refused with 413 before its body is read."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.translation import gettext as _

# Room for the multipart framing and the hint around the photo(s) in one request.
MULTIPART_OVERHEAD = 64 * 1024


def upload_request_limit(*, batch: bool) -> int:
    """The largest request body accepted on the scan-creation endpoints."""
    photos = settings.SCAN_BATCH_MAX_IMAGES if batch else 1
    return photos * settings.SCAN_IMAGE_MAX_BYTES + MULTIPART_OVERHEAD


class UploadSizeLimitMiddleware:
    """413 for a scan upload whose Content-Length is over the limit, before anything reads the
    body (DRF's CSRF check of a session request would parse the whole multipart body first).

    Per-file limits inside a smaller request stay a 400 from the serializer. Django's own
    DATA_UPLOAD_MAX_MEMORY_SIZE never counts file parts, so this is the cap on uploads (set
    the proxy's client_max_body_size to match).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self._prefix: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method in ("POST", "PUT", "PATCH"):
            if self._prefix is None:
                self._prefix = reverse("api:scan-list")
            path = request.path_info
            if path == self._prefix or path.startswith(self._prefix + "/"):
                refusal = self._refusal(request, batch=path.rstrip("/").endswith("/batch"))
                if refusal is not None:
                    return refusal
        return self.get_response(request)

    @staticmethod
    def _refusal(request: HttpRequest, *, batch: bool) -> JsonResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            return JsonResponse({"detail": _("Invalid Content-Length header.")}, status=400)
        limit = upload_request_limit(batch=batch)
        if length > limit:
            size = filesizeformat(length)
            per_photo = filesizeformat(settings.SCAN_IMAGE_MAX_BYTES)
            detail = _("The upload is %(size)s; the limit is %(limit)s per photo.") % {
                "size": size,
                "limit": per_photo,
            }
            if batch:
                detail += " " + _("At most %(count)d photos per batch.") % {
                    "count": settings.SCAN_BATCH_MAX_IMAGES
                }
            response = JsonResponse({"detail": detail}, status=413)
            response["Connection"] = "close"  # the unread body is not worth draining
            return response
        return None
