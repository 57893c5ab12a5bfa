"""HTTP routes of `mcp` besides the MCP endpoint itself. Paths are relative to `/api/mcp` at the
gateway."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from coder.services.mcp.models import AuditEntry
from coder.services.mcp.schemas import AuditEntryRead
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["mcp"])


@router.get("/audit", response_model=Page[AuditEntryRead])
async def read_audit(
    session: SessionDep,
    principal: Annotated[Principal, require("mcp:audit")],
    params: PageDep,
    tool: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    outcome: Annotated[Literal["ok", "error", "denied"] | None, Query()] = None,
) -> Page[AuditEntryRead]:
    """The organization's MCP tool calls, newest first: who called which tool and how it ended."""
    query = scoped(AuditEntry, principal.org_id)
    for column, value in ((AuditEntry.tool, tool), (AuditEntry.actor, actor), (AuditEntry.outcome, outcome)):
        if value is not None:
            query = query.where(column == value)
    rows = await paginate(session, query, (AuditEntry.at, AuditEntry.id), params, descending=True)
    return rows.page(AuditEntryRead.model_validate)
