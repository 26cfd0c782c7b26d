"""Pagination whose cost does not grow with the table or with a user's history.

Two costs grew with the rows a list holds, and each is bounded here:

- **The count.** Django's paginator (the admin's lists) and DRF's page-number pagination count
  the whole filtered list for every page: ``SELECT count(*)`` over a million scans is the
  slowest part of a page of twenty. Here a list counts at most ``COUNT_CAP + 1`` rows
  (``SELECT count(*) FROM (… LIMIT 10001)``): exact up to the cap, ``10001`` past it ("more
  than 10,000").
- **The depth** (issue 22 §4). A page number is an ``OFFSET``: the last page of a user with
  100,000 scans reads and drops ~100,000 index entries. The scan lists (the API's and the
  history page) page by **position** instead (keyset, DRF's cursor pagination): the ``next``
  link carries the ``created_at`` of the page's last scan, and the next page is ``created_at <
  position`` on the index ``(owner, -created_at)`` (``-id`` breaks ties; equal timestamps
  inside a page are skipped by a small offset), so any page costs what the first one does.
  The API still answers ``?page=N`` as before (an ``OFFSET``, up to the count's cap) for the
  clients that build page numbers themselves; its links are cursors.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

COUNT_CAP = 10_000


def bounded_count(queryset: QuerySet[Any]) -> int:
    """The queryset's length, counted up to ``COUNT_CAP + 1`` rows."""
    return int(queryset.order_by()[: COUNT_CAP + 1].count())


class BoundedCountPaginator(Paginator):
    """Django's paginator, counting at most ``COUNT_CAP + 1`` rows."""

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if not hasattr(object_list, "order_by"):  # a list, not a queryset
            return len(object_list)
        return bounded_count(object_list)


COUNT_DESCRIPTION = (
    f"Exact up to {COUNT_CAP:,}; {COUNT_CAP + 1} means more (narrow the list with its filters, "
    "or follow the links)."
)


class BoundedPageNumberPagination(PageNumberPagination):
    """The API's page-number pagination (``?page=``), its ``count`` bounded at the cap."""

    django_paginator_class = BoundedCountPaginator

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        described["properties"]["count"]["description"] = COUNT_DESCRIPTION
        return described


class NewestFirstCursorPagination(CursorPagination):
    """Newest first, a page at a time by position (``?cursor=``): the cost of a page does not
    depend on how deep it is. For querysets with ``created_at`` and ``id``, e.g. the history
    page (``paginate_queryset(scans, rest_framework.request.Request(request))``)."""

    ordering = ("-created_at", "-id")
    cursor_query_description = "A page's position: take it from the `next` or `previous` link."


class ScanListPagination(NewestFirstCursorPagination):
    """The API's list of scans: ``{count, next, previous, results}`` as before, ``count``
    bounded at the cap; ``next`` and ``previous`` are cursor links, whatever the depth the
    cost of one page. ``?page=N`` (without a cursor) still pages by number, as before this
    pagination: an ``OFFSET``, for the first pages."""

    def paginate_queryset(
        self, queryset: QuerySet[Any], request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        self.by_number: BoundedPageNumberPagination | None = None
        params = request.query_params
        if self.cursor_query_param not in params and "page" in params:
            self.by_number = BoundedPageNumberPagination()  # it counts, bounded, itself
            return self.by_number.paginate_queryset(queryset, request, view)
        self.count = bounded_count(queryset)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        if self.by_number is not None:
            return self.by_number.get_paginated_response(data)
        return Response(
            {
                "count": self.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        described["required"] = ["count", "results"]
        for link in ("next", "previous"):
            described["properties"][link]["example"] = (
                "https://eco2.example/api/v1/scans?cursor=cD0yMDI2LTEyLTA1KzA5JTNBMTI"
            )
        described["properties"] = {
            "count": {"type": "integer", "example": 123, "description": COUNT_DESCRIPTION},
            **described["properties"],
        }
        return described

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        by_number = BoundedPageNumberPagination().get_schema_operation_parameters(view)
        for parameter in by_number:
            parameter["description"] = (
                "A page number (an offset, up to the count's cap), for clients that build page "
                "numbers; the links use the cursor, whose pages cost the same at any depth."
            )
        return [*super().get_schema_operation_parameters(view), *by_number]
