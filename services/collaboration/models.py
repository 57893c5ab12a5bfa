"""collaboration's tables: documents with their members, the append-only update log, snapshots, and
comments anchored with Yjs relative positions."""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Identity, Index, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="collaboration"):
    """The collaboration target's tables; `Base.events` is its outbox and inbox."""


class Document(Base):
    """A shared document: its owner, editors and viewers (user ids), and what the rest of the org
    may do (`org_access`: none, viewer or editor). Its content is the update log and snapshots."""

    __tablename__ = "collaboration_document"
    __table_args__ = (Index(None, "org_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(128))
    editors: Mapped[list[str]] = mapped_column(ARRAY(String(128)), default=list)
    viewers: Mapped[list[str]] = mapped_column(ARRAY(String(128)), default=list)
    org_access: Mapped[str] = mapped_column(String(16), default="none")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Update(Base):
    """One Yjs update (v1 encoding) as a client sent it, stored before anyone else sees it. Rows are
    deleted only by the compaction that merged them into a snapshot."""

    __tablename__ = "collaboration_update"
    __table_args__ = (Index(None, "document_id", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("collaboration_document.id", ondelete="CASCADE")
    )
    org_id: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Snapshot(Base):
    """The document's merged state once the log through `through_seq` was folded in. The newest is
    where loading starts; older ones are its history."""

    __tablename__ = "collaboration_snapshot"
    __table_args__ = (Index(None, "document_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Taken when the row is inserted, which a compaction does holding the document's lock: a later
    # snapshot of a document always has a larger number.
    number: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("collaboration_document.id", ondelete="CASCADE")
    )
    org_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[bytes] = mapped_column(LargeBinary)
    text: Mapped[str] = mapped_column(Text)
    through_seq: Mapped[int] = mapped_column(BigInteger)
    updates_merged: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Comment(Base):
    """A comment: a thread's first comment is anchored to a range of the text by two Yjs relative
    positions (sticky indexes), so the range follows its text through edits; replies carry the
    thread's id and no anchor."""

    __tablename__ = "collaboration_comment"
    __table_args__ = (Index(None, "document_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("collaboration_document.id", ondelete="CASCADE")
    )
    org_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("collaboration_comment.id", ondelete="CASCADE")
    )
    author: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    anchor_start: Mapped[bytes | None] = mapped_column(LargeBinary)
    anchor_end: Mapped[bytes | None] = mapped_column(LargeBinary)
    quote: Mapped[str] = mapped_column(Text, default="")
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
