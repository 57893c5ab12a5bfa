from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from coder.shared.schemas import Input

MAX_CONTENT = 1_000_000  # characters of one document or file
MAX_BATCH = 500  # files of one push
MAX_K = 50

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\s/][^/]*$")]
TeamId = Annotated[str, Field(min_length=1, max_length=64)]
FilePath = Annotated[str, Field(min_length=1, max_length=1000, description="A relative POSIX path")]


class IndexStatus(StrEnum):
    PENDING = "pending"
    INDEXING = "indexing"
    INDEXED = "indexed"
    FAILED = "failed"


# --- collections ---


class CollectionCreate(Input):
    name: Name
    description: str = Field(default="", max_length=1000)
    private: bool = Field(
        default=False,
        description="Never sent to an external provider: not to an embedding model, not as context",
    )
    teams: list[TeamId] = Field(
        default_factory=list,
        max_length=100,
        description="Only these teams (gateway team ids) read it; none: everyone",
    )
    embedding_model: str | None = Field(
        default=None, min_length=1, max_length=200, description="An embeddings model; default the platform's"
    )


class CollectionUpdate(Input):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=1000)
    private: bool | None = None
    teams: list[TeamId] | None = Field(default=None, max_length=100)


class CollectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    private: bool
    teams: list[str]
    embedding_model: str | None
    created_at: datetime
    updated_at: datetime


# --- documents ---


class DocumentCreate(Input):
    title: str = Field(min_length=1, max_length=300)
    content: str = Field(max_length=MAX_CONTENT, description="Markdown")
    path: FilePath | None = Field(
        default=None, description="Where it lives in a folder of notes; default the title"
    )


class DocumentUpdate(Input):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    content: str | None = Field(default=None, max_length=MAX_CONTENT)


class IndexRead(BaseModel):
    status: IndexStatus
    error: str | None
    revision: int | None = Field(description="The revision the search index holds")
    indexed_at: datetime | None


class DocumentSummary(BaseModel):
    id: uuid.UUID
    collection_id: uuid.UUID
    source_id: uuid.UUID | None
    path: str
    title: str
    revision: int
    index: IndexRead
    updated_at: datetime


class DocumentRead(DocumentSummary):
    content: str


class RevisionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    revision: int
    title: str
    restored_from: int | None
    created_by: str
    created_at: datetime


class RevisionRead(RevisionSummary):
    content: str


# --- code sources ---


class SourceCreate(Input):
    name: Name


class SourceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    collection_id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime


class FileIn(Input):
    path: FilePath
    content: str = Field(max_length=MAX_CONTENT)


class FilesPush(Input):
    files: list[FileIn] = Field(default_factory=list, max_length=MAX_BATCH)
    delete: list[FilePath] = Field(default_factory=list, max_length=MAX_BATCH, description="Paths to remove")


class SyncRead(BaseModel):
    added: int
    updated: int
    unchanged: int
    deleted: int
    skipped: list[str] = Field(description="Archive members not indexed (binary or too large)")


# --- search ---


class SearchQuery(Input):
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(default=10, ge=1, le=MAX_K)
    collections: list[uuid.UUID] = Field(default_factory=list, max_length=100, description="Only these")
    teams: list[TeamId] = Field(
        default_factory=list, max_length=100, description="Only collections of these teams"
    )
    sources: list[uuid.UUID] = Field(
        default_factory=list, max_length=100, description="Only these code sources"
    )


class Citation(BaseModel):
    collection_id: uuid.UUID
    collection: str
    document_id: uuid.UUID
    source_id: uuid.UUID | None
    path: str
    title: str
    revision: int
    heading: str = Field(description="The heading path (Markdown) or file path and definition (code)")
    start_line: int
    end_line: int


class SearchHit(BaseModel):
    snippet: str
    score: float = Field(description="Reciprocal rank fusion of the full-text and vector ranks")
    text_rank: int | None
    vector_rank: int | None
    private: bool = Field(description="From a private collection: never for an external provider")
    citation: Citation


class SearchRead(BaseModel):
    data: list[SearchHit]
    degraded: str | None = Field(
        default=None, description="Why the vector half was left out (embeddings unreachable); full text only"
    )
