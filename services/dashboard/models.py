import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="dashboard"):
    """The dashboard target's tables; `Base.events` is its outbox and inbox."""


class Dashboard(Base):
    """A dashboard as it is now (its latest version), a user's own or a team's."""

    __tablename__ = "dashboard_dashboard"
    __table_args__ = (Index(None, "org_id", "updated_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    # The user whose own dashboard it is, or None for a team's.
    owner_id: Mapped[str | None] = mapped_column(String(128))
    team_id: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200))
    panels: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Version(Base):
    """One saved version of a dashboard: its whole content, who saved it and why."""

    __tablename__ = "dashboard_version"

    dashboard_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dashboard_dashboard.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    panels: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    author: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text, default="")
    # The version whose content this one restored, if it is a restore.
    restored_from: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
