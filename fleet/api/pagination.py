"""How the customer API pages through lists. New lists page by cursor (keyset on the
primary key, newest first): no offset scan and no COUNT(*), so page 5,000 of a million
jobs costs what page 1 does. A cursor that is not one the API handed out is a 422."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Schema
from ninja.errors import ValidationError
from ninja.pagination import CursorPagination, LimitOffsetPagination
from pydantic import Field

PAGE_MAX = 200


class BoundedPagination(LimitOffsetPagination):
    """Limit and offset both bounded, so a huge offset is a 422, not a 500."""

    class Input(Schema):
        limit: int = Field(50, ge=1, le=PAGE_MAX)
        offset: int = Field(0, ge=0, le=1_000_000)


class KeysetPagination(CursorPagination):
    """`?page_size=` (1 to 200, default 50) and `?cursor=` (the `next` or `previous` link's):
    `{"next", "previous", "results"}`, newest first."""

    class Input(Schema):
        page_size: int = Field(50, ge=1, le=PAGE_MAX)
        cursor: str | None = Field(None, max_length=200)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ordering=("-pk",), page_size=50, max_page_size=PAGE_MAX, **kwargs)

    def _find_position(self, queryset: QuerySet, cursor: CursorPagination.Cursor) -> QuerySet:
        if cursor.p is not None and not (cursor.p.isascii() and cursor.p.isdigit()):
            raise ValueError("not a position this API hands out")
        return super()._find_position(queryset, cursor)

    def paginate_queryset(
        self, queryset: QuerySet, pagination: Any, request: HttpRequest, **params: Any
    ) -> Any:
        try:
            return super().paginate_queryset(queryset, pagination, request, **params)
        except (ValueError, ValidationError) as exc:  # not base64, out of range, not a pk
            raise ValidationError(
                [{"loc": ["query", "cursor"], "msg": "Not a cursor: send `next` as given."}]
            ) from exc
