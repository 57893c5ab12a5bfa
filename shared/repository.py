"""Org scoping in one place: every query of an org's rows goes through here.

A target's rows belong to one organization (an `org_id` column) and a token speaks for one. A row
of another org must be exactly as absent as a row that does not exist, so the filter is never
written by hand: `scoped(Model, org_id)` starts a select, `owned_by(Model, org_id)` is the condition
for other statements (aggregates, locking scans), and `OrgScoped(Model, session, org_id)` reads,
locks and deletes one row or raises NotFound. `tests/shared/test_scoping.py` fails on an org filter
written anywhere else under services/.
"""

from __future__ import annotations

import uuid
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.shared.errors import NotFound

Row = TypeVar("Row")
# The gateway keys orgs by UUID; a service knows the org as its token's `org` claim, a string.
OrgId = str | uuid.UUID


def owned_by(model: type[Any], org_id: OrgId) -> ColumnElement[bool]:
    """The condition keeping `model`'s rows of one org (a mapped class with an `org_id` column)."""
    column: ColumnElement[OrgId] = inspect(model).columns["org_id"]
    return column == org_id


def owned_by_sql(parameter: str) -> str:
    """The same condition in a hand-written statement (one SQL text compiled once and prepared), for
    the org bound as `:parameter`."""
    return f"org_id = :{parameter}"


def scoped(model: type[Row], org_id: OrgId) -> Select[Row]:
    """`SELECT model WHERE org_id = :org_id`; add conditions, order, paginate as usual."""
    return select(model).where(owned_by(model, org_id))


class OrgScoped(Generic[Row]):
    """One org's rows of one table. `what` names a row in NotFound's detail (`no budget <id>`)."""

    def __init__(self, model: type[Row], session: AsyncSession, org_id: OrgId, what: str) -> None:
        self.model, self.session, self.org_id, self.what = model, session, org_id, what

    def select(self, *where: ColumnElement[bool]) -> Select[Row]:
        return scoped(self.model, self.org_id).where(*where)

    async def find(self, *where: ColumnElement[bool], lock: bool = False) -> Row | None:
        """The row matching `where` in this org, or None; `lock` takes a row lock (FOR UPDATE)."""
        query = self.select(*where)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def get(self, name: Any, *where: ColumnElement[bool], lock: bool = False) -> Row:
        """The row matching `where` in this org; NotFound (`no <what> <name>`) if there is none, the
        same answer whether it never existed or belongs to another org."""
        row = await self.find(*where, lock=lock)
        if row is None:
            raise NotFound(f"no {self.what} {name}")
        return row

    async def delete(self, name: Any, *where: ColumnElement[bool]) -> None:
        await self.session.delete(await self.get(name, *where))
        await self.session.flush()
