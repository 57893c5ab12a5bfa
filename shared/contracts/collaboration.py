"""Events the collaboration target publishes: a shared document's life, its snapshots, its comments."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from coder.shared.contracts import Contract


class DocumentFields(BaseModel):
    """Which document; `actor` is the id of the user whose action it was (for a snapshot the server
    takes on its own, the document's owner)."""

    document_id: str
    title: str
    actor: str


class DocumentCreated(DocumentFields, Contract):
    event_type: ClassVar[str] = "collaboration.document.created"
    schema_version: ClassVar[int] = 1

    owner: str


class DocumentDeleted(DocumentFields, Contract):
    event_type: ClassVar[str] = "collaboration.document.deleted"
    schema_version: ClassVar[int] = 1


class DocumentSnapshotted(DocumentFields, Contract):
    """The update log up to `through_seq` was merged into snapshot `snapshot_id` (compaction)."""

    event_type: ClassVar[str] = "collaboration.document.snapshotted"
    schema_version: ClassVar[int] = 1

    snapshot_id: str
    through_seq: int = Field(ge=0)
    updates_merged: int = Field(ge=0)
    size: int = Field(ge=0, description="Bytes of the merged state")


class DocumentCommented(DocumentFields, Contract):
    """A comment was added: a new thread anchored to `quote`, or (with `thread_id`) a reply."""

    event_type: ClassVar[str] = "collaboration.document.commented"
    schema_version: ClassVar[int] = 1

    comment_id: str
    thread_id: str | None = None
    quote: str
    body: str
