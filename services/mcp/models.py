import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="mcp"):
    """The mcp target's tables; `Base.events` is its outbox and inbox."""


class AuditEntry(Base):
    """One tool call: who called which tool, on which target, and how it ended. Never the arguments'
    values or the result, which may hold anything the target returns."""

    __tablename__ = "mcp_audit"
    __table_args__ = (Index(None, "org_id", "at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    tool: Mapped[str] = mapped_column(String(128))
    target: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(300))
    # The target's HTTP status; None when the call never reached it (unknown tool, bad arguments).
    status: Mapped[int | None]
    outcome: Mapped[str] = mapped_column(String(16))  # ok | error | denied
    # Argument names (never values) and, for a refusal, the problem's type and required permission.
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(server_default=func.now())
