"""Pagination whose cost does not grow with the table: the count of a list stops at COUNT_CAP.

Django's paginator (the admin's lists, the history page) and DRF's page-number pagination both
count the whole filtered list for every page: ``SELECT count(*)`` over a million scans is the
slowest part of a page of twenty. Here a list counts at most ``COUNT_CAP + 1`` rows (``SELECT
count(*) FROM (… LIMIT 10001)``): exact up to the cap, ``10001`` past it ("more than 10,000"),
and the pages past the cap are narrowed with filters instead. A page's own query is an
indexed ``ORDER BY … LIMIT … OFFSET``, whose cost is set by the page's depth, not the table's
size.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from rest_framework.pagination import PageNumberPagination

COUNT_CAP = 10_000


class BoundedCountPaginator(Paginator):
    """Django's paginator, counting at most ``COUNT_CAP + 1`` rows."""

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if not hasattr(object_list, "order_by"):  # a list, not a queryset
            return len(object_list)
        return int(object_list.order_by()[: COUNT_CAP + 1].count())


class BoundedPageNumberPagination(PageNumberPagination):
    """The API's page-number pagination (``?page=``), its ``count`` bounded at the cap."""

    django_paginator_class = BoundedCountPaginator

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        described = super().get_paginated_response_schema(schema)
        described["properties"]["count"]["description"] = (
            f"Exact up to {COUNT_CAP:,}; {COUNT_CAP + 1} means more (narrow the list with its "
            "filters to reach older items)."
        )
        return described
