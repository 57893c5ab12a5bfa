"""Dashboards and their versions: who sees which, what a panel's query may read, saving against the
version read, restoring; and the aggregate: every panel's query at once, each under its own timeout."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import unquote

import httpx
from sqlalchemy import ColumnElement, or_
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.dashboard.models import Base, Dashboard, Version
from coder.services.dashboard.schemas import (
    DEFAULT_TIMEOUT,
    DashboardRead,
    Panel,
    Slot,
    SlotStatus,
)
from coder.shared.auth import Principal
from coder.shared.errors import Conflict, InvalidField
from coder.shared.http import ServiceClients
from coder.shared.repository import OrgScoped

# Targets a panel may not read: the gateway's routes are not a target's `/v1` API, and a dashboard
# reading dashboards would fan out into itself.
NOT_QUERYABLE = frozenset({"gateway", "dashboard"})
# A panel's answer larger than this is not passed on.
MAX_ANSWER_BYTES = 1_000_000
STATUS_OF = {401: SlotStatus.UNAUTHORIZED, 403: SlotStatus.FORBIDDEN, 404: SlotStatus.NOT_FOUND}


class StaleVersion(Conflict):
    slug, title = "stale-version", "Saved against an old version"

    def __init__(self, read: int, latest: int) -> None:
        super().__init__(
            f"saved against version {read}, but the latest is {latest}: read it again and reapply the change",
            version=read,
            latest=latest,
        )


def visible(principal: Principal) -> ColumnElement[bool]:
    """A user's own dashboards and every team's (team dashboards are shared across the organization)."""
    return or_(Dashboard.owner_id == principal.subject, Dashboard.owner_id.is_(None))


async def get(
    session: AsyncSession, principal: Principal, dashboard_id: uuid.UUID, *, lock: bool = False
) -> Dashboard:
    """The dashboard if the caller may see it: another user's own is a 404 like none."""
    return await OrgScoped(Dashboard, session, principal.org_id, "dashboard").get(
        dashboard_id, Dashboard.id == dashboard_id, visible(principal), lock=lock
    )


def read(dashboard: Dashboard) -> DashboardRead:
    return DashboardRead.model_validate(dashboard, from_attributes=True)


def path_problem(path: str) -> str | None:
    """Why a panel's path may not be read, or None: a target's own `/v1` path, nothing that could
    climb out of it once decoded (`..`, `%2e%2e`, empty segments, backslashes), no query string."""
    decoded = path
    for _ in range(3):  # %252e%252e decodes twice
        decoded = unquote(decoded)
    if not path.startswith("/v1/") or not decoded.startswith("/v1/"):
        return "must be a path of the target's own API, starting with /v1/"
    if any(c in decoded for c in "?#\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return "no query string, fragment, backslash or control character (parameters go in params)"
    if any(segment in ("", ".", "..") for segment in decoded.split("/")[1:]):
        return "no empty, '.' or '..' segment"
    return None


def check_panels(panels: Sequence[Panel], targets: Collection[str]) -> list[dict[str, Any]]:
    """The panels as stored, or InvalidField naming the first field at fault (`panels.<n>.query.path`)."""
    seen: set[int] = set()
    for n, panel in enumerate(panels):
        if panel.id in seen:
            raise InvalidField(f"panels.{n}.id", f"panel id {panel.id} is used twice")
        seen.add(panel.id)
        query = panel.query
        if query is None:
            continue
        if query.target not in targets or query.target in NOT_QUERYABLE:
            known = ", ".join(sorted(set(targets) - NOT_QUERYABLE))
            raise InvalidField(
                f"panels.{n}.query.target", f"no target {query.target!r} to read (known: {known})"
            )
        if query.method != "GET":
            raise InvalidField(f"panels.{n}.query.method", f"{query.method!r}: a panel only reads (GET)")
        problem = path_problem(query.path)
        if problem is not None:
            raise InvalidField(f"panels.{n}.query.path", problem)
    return [p.model_dump(mode="json") for p in panels]


async def _version(
    session: AsyncSession, dashboard: Dashboard, author: str, message: str, restored_from: int | None = None
) -> None:
    session.add(
        Version(
            dashboard_id=dashboard.id,
            version=dashboard.version,
            org_id=dashboard.org_id,
            title=dashboard.title,
            panels=dashboard.panels,
            author=author,
            message=message,
            restored_from=restored_from,
        )
    )
    await session.flush()
    await Base.events.publish(
        session,
        "dashboard.dashboard.saved",
        {
            "dashboard_id": str(dashboard.id),
            "version": dashboard.version,
            "title": dashboard.title,
            "owner_id": dashboard.owner_id,
            "team_id": dashboard.team_id,
            "author": author,
            "restored_from": restored_from,
        },
        org_id=dashboard.org_id,
        subject=str(dashboard.id),
    )


async def create(
    session: AsyncSession,
    principal: Principal,
    title: str,
    team_id: str | None,
    panels: list[dict[str, Any]],
    message: str,
) -> Dashboard:
    dashboard = Dashboard(
        org_id=principal.org_id,
        owner_id=None if team_id is not None else principal.subject,
        team_id=team_id,
        title=title,
        panels=panels,
        version=1,
        created_by=principal.subject,
    )
    session.add(dashboard)
    await session.flush()
    await _version(session, dashboard, principal.subject, message)
    await session.refresh(dashboard)
    return dashboard


async def save(
    session: AsyncSession,
    principal: Principal,
    dashboard_id: uuid.UUID,
    read_version: int,
    title: str,
    panels: list[dict[str, Any]],
    message: str,
    restored_from: int | None = None,
) -> Dashboard:
    """A new version, if `read_version` is still the latest (the row is locked while checking)."""
    dashboard = await get(session, principal, dashboard_id, lock=True)
    if dashboard.version != read_version:
        raise StaleVersion(read_version, dashboard.version)
    dashboard.title, dashboard.panels, dashboard.version = title, panels, dashboard.version + 1
    await session.flush()
    await _version(session, dashboard, principal.subject, message, restored_from)
    await session.refresh(dashboard)
    return dashboard


async def version(
    session: AsyncSession, principal: Principal, dashboard_id: uuid.UUID, number: int
) -> Version:
    await get(session, principal, dashboard_id)
    return await OrgScoped(Version, session, principal.org_id, "version").get(
        number, Version.dashboard_id == dashboard_id, Version.version == number
    )


# --- the aggregate ---


async def _fetch(clients: ServiceClients, panel: dict[str, Any]) -> Slot:
    query = panel.get("query")
    if query is None:
        return Slot(panel_id=panel["id"], status=SlotStatus.NO_QUERY)
    timeout = panel.get("timeout_seconds") or DEFAULT_TIMEOUT
    try:
        client = clients.client(query["target"])
    except KeyError:  # a target this platform no longer runs
        return Slot(
            panel_id=panel["id"], status=SlotStatus.UNAVAILABLE, detail=f"no target {query['target']}"
        )
    try:
        async with asyncio.timeout(timeout):
            response = await client.get(query["path"], params=query["params"])
    except TimeoutError:
        return Slot(panel_id=panel["id"], status=SlotStatus.TIMEOUT, detail=f"no answer within {timeout:g}s")
    except httpx.HTTPError as error:
        detail = f"{query['target']} unreachable ({type(error).__name__})"
        return Slot(panel_id=panel["id"], status=SlotStatus.UNAVAILABLE, detail=detail)
    return _slot(panel["id"], response)


def _slot(panel_id: int, response: httpx.Response) -> Slot:
    if len(response.content) > MAX_ANSWER_BYTES:
        return Slot(
            panel_id=panel_id,
            status=SlotStatus.ERROR,
            http_status=response.status_code,
            detail=f"the answer is over {MAX_ANSWER_BYTES} bytes",
        )
    try:
        data: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = response.text
    if response.is_success:
        return Slot(panel_id=panel_id, status=SlotStatus.OK, http_status=response.status_code, data=data)
    detail = data.get("detail") if isinstance(data, dict) else None
    return Slot(
        panel_id=panel_id,
        status=STATUS_OF.get(response.status_code, SlotStatus.ERROR),
        http_status=response.status_code,
        detail=str(detail) if detail is not None else response.reason_phrase,
    )


async def aggregate(clients: ServiceClients, panels: Sequence[dict[str, Any]]) -> list[Slot]:
    """Every panel's slot, the queries run at once: a slow or failing target costs its own panels
    their timeout, never the others' answers."""
    return list(await asyncio.gather(*(_fetch(clients, panel) for panel in panels)))
