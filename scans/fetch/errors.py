"""The errors of fetching a photo given by address, each with its stable code."""

from __future__ import annotations

from ..errors import CodedError


class FetchError(CodedError):
    """The photo could not be fetched."""

    code = "image_url_unreachable"


class URLRefused(FetchError):
    code = "image_url_refused"


class FetchTooLarge(FetchError):
    code = "image_url_too_large"


class FetchTimeout(FetchError):
    code = "image_url_timeout"


class FetchHTTPError(FetchError):
    code = "image_url_http_error"


class TooManyRedirects(FetchError):
    code = "image_url_too_many_redirects"
