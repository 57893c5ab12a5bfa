"""Request bodies and answers of collaboration's REST routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from coder.shared.schemas import Input

Title = Annotated[str, Field(min_length=1, max_length=200)]
UserId = Annotated[str, Field(min_length=1, max_length=128)]
Members = Annotated[list[UserId], Field(max_length=500)]
Body = Annotated[str, Field(min_length=1, max_length=10_000)]
Offset = Annotated[int, Field(ge=0, le=2**31 - 1)]


class Role(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class OrgAccess(StrEnum):
    """What members of the organization who are not listed on the document may do."""

    NONE = "none"
    VIEWER = "viewer"
    EDITOR = "editor"


class DocumentCreate(Input):
    title: Title
    editors: Members = []
    viewers: Members = []
    org_access: OrgAccess = OrgAccess.NONE
    text: Annotated[str, Field(max_length=1_000_000, description="Initial content of the text")] = ""


class DocumentUpdate(Input):
    """Owner only: the title, the members and the org's access (the content changes over the sync)."""

    title: Title | None = None
    editors: Members | None = None
    viewers: Members | None = None
    org_access: OrgAccess | None = None


class DocumentSummary(BaseModel):
    id: uuid.UUID
    title: str
    owner: str
    editors: list[str]
    viewers: list[str]
    org_access: OrgAccess
    role: Role = Field(description="The caller's role on the document")
    created_at: datetime
    updated_at: datetime


class DocumentRead(DocumentSummary):
    text: str = Field(description="The current content of the document's text (root type `content`)")
    state: str = Field(description="The whole document as one Yjs update (v1), base64")
    size: int = Field(description="Bytes of that update")
    pending_updates: int = Field(description="Updates stored since the last snapshot")


class SnapshotRead(BaseModel):
    id: uuid.UUID
    through_seq: int
    updates_merged: int
    size: int
    created_at: datetime


class SnapshotContent(SnapshotRead):
    text: str
    state: str = Field(description="The document as it was, one Yjs update (v1), base64")


class CommentCreate(Input):
    """A new thread anchored to [start, end) of the text, or, with `thread_id`, a reply to one."""

    body: Body
    start: Offset | None = Field(default=None, description="First character of the range (new thread)")
    end: Offset | None = Field(default=None, description="Character after the range (new thread)")
    thread_id: uuid.UUID | None = None


class CommentResolve(Input):
    resolved: bool = True


class CommentRead(BaseModel):
    id: uuid.UUID
    thread_id: uuid.UUID | None
    author: str
    body: str
    start: int | None = Field(description="Where the range starts now (threads only)")
    end: int | None = Field(description="Where the range ends now (threads only)")
    quote: str = Field(description="The text the range covers now; empty once it was deleted")
    original_quote: str
    resolved: bool
    resolved_by: str | None
    created_at: datetime


class PresenceRead(BaseModel):
    client_id: int
    user: str | None = Field(description="The user whose connection announced this client")
    state: dict[str, Any] = Field(description="Its awareness state (name, cursor, selection...)")
