"""The one pagination shape: keyset pages with an opaque cursor, `Page[ItemRead]`."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, literal, tuple_

from coder.shared.errors import InvalidField

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams(BaseModel):
    limit: int
    after: tuple[Any, ...] | None


def _params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page")
    ] = None,
) -> PageParams:
    after = None
    if cursor:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            after = tuple(decoded) if isinstance(decoded, list) else None
        except ValueError:
            raise InvalidField("query.cursor", "not a cursor this API returned") from None
        if not isinstance(after, tuple) or not after:
            raise InvalidField("query.cursor", "not a cursor this API returned")
    return PageParams(limit=limit, after=after)


PageDep = Annotated[PageParams, Depends(_params)]


def _coerce(column: Any, value: Any) -> Any:
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return value
    if kind is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind is uuid.UUID and isinstance(value, str):
        return uuid.UUID(value)
    return value


def keyset(
    query: Select[Any], columns: Sequence[Any], params: PageParams, *, descending: bool = False
) -> Select[Any]:
    """Order `query` by `columns`, start after the cursor, fetch one extra row to see if more follow."""
    ordered = query.order_by(*(c.desc() if descending else c for c in columns)).limit(params.limit + 1)
    if params.after is None:
        return ordered
    if len(params.after) != len(columns):
        raise InvalidField("query.cursor", "not a cursor this API returned")
    try:
        values = [_coerce(c, v) for c, v in zip(columns, params.after, strict=True)]
    except (ValueError, TypeError):
        raise InvalidField("query.cursor", "not a cursor this API returned") from None
    bound = tuple_(*(literal(v, type_=c.type) for c, v in zip(columns, values, strict=True)))
    return ordered.where(tuple_(*columns) < bound if descending else tuple_(*columns) > bound)


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain, default=str).encode()).decode()


def page(
    rows: Sequence[Any], params: PageParams, key: Callable[[Any], Sequence[Any]], convert: Callable[[Any], T]
) -> Page[T]:
    """Rows fetched with `limit + 1` -> a page and the cursor of its last item when more follow."""
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    cursor = encode_cursor(key(rows[-1])) if more and rows else None
    return Page[T](items=[convert(r) for r in rows], next_cursor=cursor)
