from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TYPE_ANNOTATION_MAP, target_metadata
from coder.shared.events import EventTables


class Base(DeclarativeBase):
    metadata = target_metadata("notes")
    type_annotation_map = TYPE_ANNOTATION_MAP


events = EventTables(Base.metadata)


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
