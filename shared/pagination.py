"""The one pagination shape: keyset pages with an opaque cursor, `Page[ItemRead]`.

`paginate` orders a query by the given columns and reads the next cursor from those same columns of
the last row (selected alongside it), so a cursor cannot drift from its ORDER BY. A cursor comes back
from the client: it is decoded against the column types and refused with 400 naming `query.cursor`
when it is not one this API could have returned.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import BigInteger, Select, SmallInteger, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from coder.shared.errors import InvalidField, answers
from coder.shared.schemas import text_problem

T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: list[Any] | None


class BadCursor(InvalidField):
    def __init__(self, why: str) -> None:
        super().__init__("query.cursor", f"not a cursor this API returned ({why})", status=400)


@answers(400)
def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page")
    ] = None,
) -> PageParams:
    if not cursor:
        return PageParams(limit=limit, after=None)
    try:
        after = json.loads(base64.b64decode(cursor, altchars=b"-_", validate=True))
    except (binascii.Error, ValueError):
        raise BadCursor("not base64 of JSON") from None
    if not isinstance(after, list) or not after:
        raise BadCursor("not a list of values")
    return PageParams(limit=limit, after=after)


PageDep = Annotated[PageParams, Depends(page_params)]


def _int_limit(column: Any) -> int:
    bits = 64 if isinstance(column.type, BigInteger) else 16 if isinstance(column.type, SmallInteger) else 32
    return 2 ** (bits - 1)


def _decode(column: Any, value: Any) -> Any:
    """One cursor value as the Python value of its column, or BadCursor."""
    kind = column.type.python_type
    if kind is str and isinstance(value, str) and not text_problem(value):
        return value
    if kind is int and type(value) is int and -_int_limit(column) <= value < _int_limit(column):
        return value
    if kind is uuid.UUID and isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    if kind is datetime and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                return moment.astimezone(UTC)  # out of range in UTC raises here, not in the driver
        except (ValueError, OverflowError):
            pass
    raise BadCursor(f"bad value for {column.key}")


def _encode(values: Sequence[Any]) -> str:
    plain = [
        v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
        for v in values
    ]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode()


@dataclass(frozen=True)
class Rows(Generic[R]):
    """One page of query rows and the cursor of the next page (None on the last)."""

    items: list[R]
    next_cursor: str | None

    def page(self, convert: Callable[[R], T]) -> Page[T]:
        return Page[T](items=[convert(r) for r in self.items], next_cursor=self.next_cursor)


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    order_by: Sequence[Any],
    params: PageParams,
    *,
    descending: bool = False,
) -> Rows[Any]:
    """The page of `query` ordered by the `order_by` columns (unique together; text, integer, UUID or
    timestamptz) after the cursor.

    An item is what the query selects: the entity for `select(Entity)`, else the tuple of its columns."""
    keys = [c.label(f"_cursor_{i}") for i, c in enumerate(order_by)]
    ordered = (
        query.add_columns(*keys)
        .order_by(*(c.desc() if descending else c for c in order_by))
        .limit(params.limit + 1)
    )
    if params.after is not None:
        if len(params.after) != len(order_by):
            raise BadCursor("wrong number of values")
        values = [_decode(c, v) for c, v in zip(order_by, params.after, strict=True)]
        bound = tuple_(*(literal(v, type_=c.type) for c, v in zip(order_by, values, strict=True)))
        ordered = ordered.where(tuple_(*order_by) < bound if descending else tuple_(*order_by) > bound)
    rows = (await session.execute(ordered)).all()
    width = len(rows[0]) - len(keys) if rows else 0
    items = [row[0] if width == 1 else tuple(row[:width]) for row in rows[: params.limit]]
    more = len(rows) > params.limit
    cursor = _encode(rows[params.limit - 1][width:]) if more else None
    return Rows(items=items, next_cursor=cursor)
