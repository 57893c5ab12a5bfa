"""HTTP and WebSocket routes of `collaboration`. Paths are relative to `/api/collaboration` at the gateway.

REST manages documents, their snapshots and comments; `/v1/sync/{document_id}` is the y-websocket
endpoint (a `WebsocketProvider(".../api/collaboration/v1/sync", documentId, doc)` connects to it).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket, status
from sqlalchemy import select
from sqlalchemy.orm import aliased

from coder.services.collaboration import rooms as live
from coder.services.collaboration import service
from coder.services.collaboration.models import Comment, Document, Snapshot
from coder.services.collaboration.schemas import (
    CommentCreate,
    CommentRead,
    CommentResolve,
    DocumentCreate,
    DocumentRead,
    DocumentSummary,
    DocumentUpdate,
    PresenceRead,
    Role,
    SnapshotContent,
    SnapshotRead,
)
from coder.shared.auth import Principal, require, websocket_principal
from coder.shared.db import SessionDep, transaction
from coder.shared.errors import Conflict, NotFound, Problem
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import owned_by
from coder.shared.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["collaboration"])

Reader = Annotated[Principal, require("collaboration:read")]
Writer = Annotated[Principal, require("collaboration:write")]


def _rooms(request: Request) -> live.Rooms:
    rooms: live.Rooms = request.app.state.collaboration_rooms
    return rooms


RoomsDep = Annotated[live.Rooms, Depends(_rooms)]


# --- documents ---


@router.post("/documents", response_model=DocumentRead, status_code=status.HTTP_201_CREATED)
async def create_document(body: DocumentCreate, session: SessionDep, principal: Writer) -> DocumentRead:
    """Create a document owned by the caller, with its editors, viewers and the org's access, and
    optionally an initial text."""
    return await service.create_document(session, principal, body)


@router.get("/documents", response_model=Page[DocumentSummary])
async def list_documents(session: SessionDep, principal: Reader, params: PageDep) -> Page[DocumentSummary]:
    """The documents of the organization the caller has a role on, newest first."""
    rows = await paginate(
        session, service.list_query(principal), (Document.created_at, Document.id), params, descending=True
    )
    return rows.page(lambda d: service.summary(d, service.role_of(d, principal) or Role.VIEWER))


@router.get("/documents/{document_id}", response_model=DocumentRead)
async def read_document(document_id: uuid.UUID, session: SessionDep, principal: Reader) -> DocumentRead:
    """The document: its members, its current text (root type `content`) and its whole state."""
    document, role = await service.get_document(session, principal, document_id, Role.VIEWER)
    return await service.read_document(session, document, role)


@router.patch("/documents/{document_id}", response_model=DocumentSummary)
async def change_document(
    document_id: uuid.UUID, body: DocumentUpdate, session: SessionDep, principal: Writer
) -> DocumentSummary:
    """Owner only: rename the document, change its editors and viewers or the org's access (open
    connections keep the role they opened with until they reconnect)."""
    document, role = await service.get_document(session, principal, document_id, Role.OWNER, lock=True)
    await service.change_document(session, document, body)
    return service.summary(document, role)


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: uuid.UUID, session: SessionDep, principal: Writer, rooms: RoomsDep
) -> Response:
    """Owner only: delete the document with its history and comments; its clients are disconnected."""
    document, _ = await service.get_document(session, principal, document_id, Role.OWNER, lock=True)
    await service.delete_document(session, document, principal.subject)
    rooms.close_document(document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/documents/{document_id}/presence", response_model=list[PresenceRead])
async def presence(
    document_id: uuid.UUID, session: SessionDep, principal: Reader, rooms: RoomsDep
) -> list[PresenceRead]:
    """Who has the document open (as this replica knows from the awareness protocol): each client's
    user and its awareness state (name, cursor, selection)."""
    await service.get_document(session, principal, document_id, Role.VIEWER)
    return rooms.presence(document_id)


# --- snapshots ---


@router.get("/documents/{document_id}/snapshots", response_model=Page[SnapshotRead])
async def list_snapshots(
    document_id: uuid.UUID, session: SessionDep, principal: Reader, params: PageDep
) -> Page[SnapshotRead]:
    """The document's snapshots, newest first: each is its whole state once the update log up to
    `through_seq` was merged into it."""
    query = select(Snapshot).where(Snapshot.document_id == document_id, owned_by(Snapshot, principal.org_id))
    # Paged first, so a forged cursor is a 400 whatever the document; nothing is answered before the
    # caller's role is checked.
    rows = await paginate(session, query, (Snapshot.number,), params, descending=True)
    await service.get_document(session, principal, document_id, Role.VIEWER)
    return rows.page(service.snapshot_read)


@router.post("/documents/{document_id}/snapshots", response_model=SnapshotRead, status_code=201)
async def take_snapshot(document_id: uuid.UUID, session: SessionDep, principal: Writer) -> SnapshotRead:
    """Editors: merge the update log into a snapshot now (the server also does it every
    `COLLABORATION_SNAPSHOT_EVERY` updates and when the last client leaves)."""
    document, _ = await service.get_document(session, principal, document_id, Role.EDITOR)
    snapshot = await service.compact(session, document, principal.subject)
    if snapshot is None:
        raise Conflict("no update since the last snapshot", slug="nothing-to-snapshot")
    await session.refresh(snapshot)
    return service.snapshot_read(snapshot)


@router.get("/documents/{document_id}/snapshots/{snapshot_id}", response_model=SnapshotContent)
async def read_snapshot(
    document_id: uuid.UUID,
    snapshot_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
) -> SnapshotContent:
    """One snapshot: the document's text and state as they were."""
    document, _ = await service.get_document(session, principal, document_id, Role.VIEWER)
    return await service.snapshot_content(session, document, snapshot_id)


# --- comments ---


@router.get("/documents/{document_id}/comments", response_model=Page[CommentRead])
async def list_comments(
    document_id: uuid.UUID,
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    resolved: Annotated[bool | None, Query(description="Only resolved (or unresolved) threads")] = None,
) -> Page[CommentRead]:
    """The document's comments, oldest first, each thread's range where its text is now."""
    query = select(Comment).where(Comment.document_id == document_id, owned_by(Comment, principal.org_id))
    if resolved is not None:
        thread = aliased(Comment)
        resolved_threads = select(thread.id).where(
            thread.document_id == document_id, thread.thread_id.is_(None), thread.resolved == resolved
        )
        query = query.where((Comment.thread_id.in_(resolved_threads)) | (Comment.id.in_(resolved_threads)))
    # Paged first, so a forged cursor is a 400 whatever the document (see list_snapshots).
    rows = await paginate(session, query, (Comment.created_at, Comment.id), params)
    document, _ = await service.get_document(session, principal, document_id, Role.VIEWER)
    content = await service.load(session, document.id)
    return rows.page(lambda c: service.comment_read(content.doc, c))


@router.post("/documents/{document_id}/comments", response_model=CommentRead, status_code=201)
async def add_comment(
    document_id: uuid.UUID, body: CommentCreate, session: SessionDep, principal: Writer
) -> CommentRead:
    """Editors: start a thread on the text range [start, end) (character offsets), or reply to a
    thread with `thread_id`. The range is anchored with Yjs relative positions: it stays on the same
    text while people insert or delete around it."""
    document, _ = await service.get_document(session, principal, document_id, Role.EDITOR)
    return await service.add_comment(session, document, principal.subject, body)


@router.post("/documents/{document_id}/comments/{comment_id}/resolve", response_model=CommentRead)
async def resolve_comment(
    document_id: uuid.UUID,
    comment_id: uuid.UUID,
    body: CommentResolve,
    session: SessionDep,
    principal: Writer,
) -> CommentRead:
    """Editors: resolve a thread (or reopen it with `resolved: false`)."""
    document, _ = await service.get_document(session, principal, document_id, Role.EDITOR)
    return await service.resolve(session, document, comment_id, body.resolved, principal.subject)


# --- live sync ---

CLOSE_CODES = {401: 4401, 403: 4403, 404: 4404}


@router.websocket("/sync/{document_id}")
async def sync(websocket: WebSocket, document_id: str) -> None:
    """The y-websocket protocol for one document: sync step 1/2 and updates, awareness. Viewers (and
    callers without collaboration:write) receive but their updates are refused with y-protocols'
    permission-denied message. Refusals close with 4401, 4403 or 4404."""
    runtime: Runtime = websocket.app.state.runtime
    rooms: live.Rooms = websocket.app.state.collaboration_rooms
    try:
        principal = await websocket_principal(websocket, "collaboration:read")
        try:
            parsed = uuid.UUID(document_id)
        except ValueError:
            raise NotFound(f"no document {document_id}") from None
        async with transaction(runtime.sessions) as session:
            document, role = await service.get_document(session, principal, parsed, Role.VIEWER)
        if not principal.can("collaboration:write"):
            role = Role.VIEWER
    except Problem as problem:
        # Accepted first, so the client reads why in the close frame (a close before the handshake
        # completes is a bare HTTP 403).
        await websocket.accept()
        await websocket.close(
            code=CLOSE_CODES.get(problem.status, 4400), reason=(problem.detail or problem.title)[:120]
        )
        return
    await websocket.accept()
    await live.serve(rooms, websocket, document, principal.subject, role)
