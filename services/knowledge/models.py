import uuid
from datetime import datetime

from sqlalchemy import Computed, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# The text search configuration of the full-text half of search (stemming for prose; identifiers in
# code split at `_` and `.` by the default parser).
TS_CONFIG = "english"


class Base(TargetBase, DeclarativeBase, target="knowledge"):
    """The knowledge target's tables; `Base.events` is its outbox and inbox."""


class Collection(Base):
    """Documents and code sources searched together. `teams` (gateway team ids) restricts who reads it;
    `private` keeps its content from every external provider."""

    __tablename__ = "knowledge_collection"
    __table_args__ = (UniqueConstraint("org_id", "name"), Index(None, "org_id", "name", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    private: Mapped[bool] = mapped_column(default=False)
    teams: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    # The embeddings model its chunks' vectors come from (fixed at creation).
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Source(Base):
    """A code repository in a collection: files uploaded as an archive or pushed by the IDE."""

    __tablename__ = "knowledge_source"
    __table_args__ = (UniqueConstraint("collection_id", "name"), Index(None, "org_id", "name", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    collection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_collection.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Document(Base):
    """A Markdown document, or a file of a code source (`source_id`, `path`), at its latest revision,
    with where its indexing stands."""

    __tablename__ = "knowledge_document"
    __table_args__ = (
        UniqueConstraint("collection_id", "source_id", "path"),
        Index(None, "org_id", "collection_id", "path", "id"),
        Index(None, "source_id", "path"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    collection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_collection.id", ondelete="CASCADE")
    )
    source_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("knowledge_source.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1000))
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    index_status: Mapped[str] = mapped_column(String(16), default="pending")
    index_error: Mapped[str | None] = mapped_column(String(2000))
    indexed_revision: Mapped[int | None] = mapped_column(Integer)
    indexed_at: Mapped[datetime | None]
    updated_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Revision(Base):
    """A document's content as of one revision; a restore copies an old one into a new one."""

    __tablename__ = "knowledge_revision"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_document.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    content: Mapped[str] = mapped_column(Text)
    restored_from: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Chunk(Base):
    """A piece of a document as indexed: its text, where it sits (heading path, lines) and its
    full-text vector; its embedding lives in embeddings under the chunk's id."""

    __tablename__ = "knowledge_chunk"
    __table_args__ = (
        Index("knowledge_ix_chunk_tsv", "tsv", postgresql_using="gin"),
        Index(None, "document_id", "ordinal"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    collection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_collection.id", ondelete="CASCADE")
    )
    source_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("knowledge_source.id", ondelete="CASCADE"))
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("knowledge_document.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    ordinal: Mapped[int] = mapped_column(Integer)
    heading: Mapped[str] = mapped_column(String(1000), default="")
    start_line: Mapped[int] = mapped_column(Integer)
    end_line: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    # What full text searches: the heading path (the file path, for code) and the text.
    tsv: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(f"to_tsvector('{TS_CONFIG}'::regconfig, heading || ' ' || content)", persisted=True),
    )
