"""Paging at fleet scale, for the portal's lists and the admin's changelists alike: a
count stops at COUNT_CAP + 1 rows (one bounded statement, however long the history), so
a list past the cap reads "10,000+" and offers its first pages; filters narrow."""

from typing import Any, cast

from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils.functional import cached_property

from fleet import policy


class CappedPaginator(Paginator):
    @cached_property
    def count(self) -> int:
        rows = cast("QuerySet[Any]", self.object_list)  # every list paged here is a queryset
        return rows.order_by()[: policy.COUNT_CAP + 1].count()  # any rows: no sort

    @property
    def capped(self) -> bool:
        return self.count > policy.COUNT_CAP


def count_of(rows: QuerySet[Any], by: str) -> Coalesce:
    """How many of `rows` point at the outer row (their `by` is its pk), as a correlated
    subquery: counted for the rows a page shows, never grouped over a whole table first."""
    counted = (
        rows.filter(**{by: OuterRef("pk")})
        .order_by()
        .values(by)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted), 0)
