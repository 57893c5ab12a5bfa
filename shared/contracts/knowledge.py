"""Events the knowledge target publishes: one per change to a document (a Markdown page or a file of
a code source). knowledge consumes its own `knowledge.document.updated` to index the document, so an
index job waits in the outbox and the queue, and survives a restart."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from coder.shared.contracts import Contract


class DocumentFields(BaseModel):
    """Which document of which collection (and code source, for a file), at which revision. `actor`
    is the user's id."""

    document_id: str
    collection_id: str
    source_id: str | None = None
    path: str
    revision: int = Field(ge=1)
    actor: str


class DocumentCreated(DocumentFields, Contract):
    event_type: ClassVar[str] = "knowledge.document.created"
    schema_version: ClassVar[int] = 1


class DocumentUpdated(DocumentFields, Contract):
    """A document has a new revision to index (created, edited, restored, or asked to be indexed again)."""

    event_type: ClassVar[str] = "knowledge.document.updated"
    schema_version: ClassVar[int] = 1


class DocumentDeleted(DocumentFields, Contract):
    """A document is gone, with its chunks; its vectors are deleted when knowledge handles this."""

    event_type: ClassVar[str] = "knowledge.document.deleted"
    schema_version: ClassVar[int] = 1
