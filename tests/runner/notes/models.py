from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="notes"):
    """The notes target's tables; `Base.events` is its outbox and inbox."""


class Note(Base):
    __tablename__ = "notes_note"
    # The list's keyset order, within one org.
    __table_args__ = (Index(None, "org_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
