"""Paging at fleet scale, for the portal's lists and the admin's changelists alike: a
count stops at COUNT_CAP + 1 rows (one bounded statement, however long the history), so
a list past the cap reads "10,000+" and offers its first pages; filters narrow."""

from typing import Any, cast

from django.core.paginator import Paginator
from django.db.models import QuerySet
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
