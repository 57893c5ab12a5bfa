"""Documents, who may do what with them, and their content: the append-only update log, compaction
into snapshots, and comments anchored with Yjs relative positions (pycrdt's StickyIndex)."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from pycrdt import Assoc, Doc, StickyIndex, Text
from sqlalchemy import ColumnElement, Select, delete, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.collaboration.models import Base, Comment, Document, Snapshot, Update
from coder.services.collaboration.schemas import (
    CommentCreate,
    CommentRead,
    DocumentCreate,
    DocumentRead,
    DocumentSummary,
    DocumentUpdate,
    OrgAccess,
    Role,
    SnapshotContent,
    SnapshotRead,
)
from coder.shared.auth import Principal
from coder.shared.errors import Forbidden, InvalidField, NotFound, Problem
from coder.shared.repository import OrgScoped, scoped

# The root type whose text REST reads, comments anchor to and a document is created with.
TEXT = "content"
EMPTY_UPDATE = b"\x00\x00"
RANK = {Role.VIEWER: 0, Role.EDITOR: 1, Role.OWNER: 2}


def role_of(document: Document, principal: Principal) -> Role | None:
    """The caller's role: the owner's, a listed member's, or the org's access; org admins own all."""
    if document.owner == principal.subject or principal.can("collaboration:admin"):
        return Role.OWNER
    if principal.subject in document.editors or document.org_access == OrgAccess.EDITOR:
        return Role.EDITOR
    if principal.subject in document.viewers or document.org_access == OrgAccess.VIEWER:
        return Role.VIEWER
    return None


def visible_to(principal: Principal) -> ColumnElement[bool]:
    """The documents of the caller's org the caller has a role on (the same rule as `role_of`)."""
    if principal.can("collaboration:admin"):
        return ~false()
    return or_(
        Document.owner == principal.subject,
        Document.editors.contains([principal.subject]),
        Document.viewers.contains([principal.subject]),
        Document.org_access != OrgAccess.NONE,
    )


async def get_document(
    session: AsyncSession, principal: Principal, document_id: uuid.UUID, need: Role, *, lock: bool = False
) -> tuple[Document, Role]:
    """The document and the caller's role on it. Another org's document, or one the caller has no
    role on, is not found; a role below `need` is refused."""
    document = await OrgScoped(Document, session, principal.org_id, "document").find(
        Document.id == document_id, lock=lock
    )
    role = role_of(document, principal) if document is not None else None
    if document is None or role is None:
        raise NotFound(f"no document {document_id}")
    if RANK[role] < RANK[need]:
        raise Forbidden(f"this needs the {need} role on the document; you are a {role}", required=need.value)
    return document, role


def summary(document: Document, role: Role) -> DocumentSummary:
    return DocumentSummary.model_validate({**_columns(document), "role": role})


def _columns(document: Document) -> dict[str, object]:
    return {
        "id": document.id,
        "title": document.title,
        "owner": document.owner,
        "editors": document.editors,
        "viewers": document.viewers,
        "org_access": document.org_access,
        "created_at": document.created_at,
        "updated_at": document.updated_at,
    }


def text_of(doc: Doc[Any]) -> str:
    return str(doc.get(TEXT, type=Text))


def check_update(update: bytes) -> None:
    """Refuse bytes that are not a Yjs update before they are stored (a stored one that does not
    decode would make the document unloadable)."""
    try:
        Doc().apply_update(update)
    except ValueError as exc:
        raise InvalidField("update", f"not a Yjs update: {exc}") from None


# --- content ---


@dataclass
class Content:
    doc: Doc[Any]
    pending: list[int]  # seqs of the log rows not yet in a snapshot, in order
    snapshot: Snapshot | None


async def load(session: AsyncSession, document_id: uuid.UUID) -> Content:
    """The newest snapshot plus every log row still there. Compaction deletes exactly the rows it
    merged, so the rows left are the ones to apply, whatever their seqs. The log is read first: a
    compaction committing between the two reads then shows in the snapshot read after it (a row met
    in both is applied twice, which changes nothing: updates are idempotent)."""
    rows = (
        await session.execute(
            select(Update.seq, Update.data).where(Update.document_id == document_id).order_by(Update.seq)
        )
    ).all()
    snapshot = (
        await session.execute(
            select(Snapshot)
            .where(Snapshot.document_id == document_id)
            .order_by(Snapshot.number.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    doc: Doc[Any] = Doc()
    if snapshot is not None:
        doc.apply_update(snapshot.state)
    for _, data in rows:
        doc.apply_update(data)
    return Content(doc, [seq for seq, _ in rows], snapshot)


async def append(
    session: AsyncSession, document_id: uuid.UUID, org_id: str, author: str, update: bytes
) -> int:
    """Store one update in the log; its seq. The caller commits before anyone sees the update."""
    row = Update(document_id=document_id, org_id=org_id, author=author, data=update)
    session.add(row)
    await session.flush()
    return row.seq


async def compact(session: AsyncSession, document: Document, actor: str) -> Snapshot | None:
    """Merge the newest snapshot and the log into a new snapshot and delete the merged rows; None
    when there is nothing to merge. Takes the document's row lock: one compaction at a time, while
    writers keep appending (their rows stay for the next one)."""
    await session.execute(select(Document.id).where(Document.id == document.id).with_for_update())
    content = await load(session, document.id)
    if not content.pending:
        return None
    state = content.doc.get_update()
    snapshot = Snapshot(
        document_id=document.id,
        org_id=document.org_id,
        state=state,
        text=text_of(content.doc),
        through_seq=content.pending[-1],
        updates_merged=len(content.pending),
    )
    session.add(snapshot)
    await session.execute(delete(Update).where(Update.seq.in_(content.pending)))
    await session.flush()
    await Base.events.publish(
        session,
        "collaboration.document.snapshotted",
        {
            "document_id": str(document.id),
            "title": document.title,
            "actor": actor,
            "snapshot_id": str(snapshot.id),
            "through_seq": snapshot.through_seq,
            "updates_merged": snapshot.updates_merged,
            "size": len(state),
        },
        org_id=document.org_id,
        subject=str(document.id),
    )
    return snapshot


# --- documents ---


async def create_document(session: AsyncSession, principal: Principal, body: DocumentCreate) -> DocumentRead:
    document = Document(
        org_id=principal.org_id,
        title=body.title,
        owner=principal.subject,
        editors=sorted(set(body.editors)),
        viewers=sorted(set(body.viewers) - set(body.editors)),
        org_access=body.org_access,
    )
    session.add(document)
    await session.flush()
    if body.text:
        doc: Doc[Any] = Doc()
        doc.get(TEXT, type=Text).insert(0, body.text)
        await append(session, document.id, document.org_id, principal.subject, doc.get_update())
    await Base.events.publish(
        session,
        "collaboration.document.created",
        {
            "document_id": str(document.id),
            "title": document.title,
            "actor": principal.subject,
            "owner": document.owner,
        },
        org_id=principal.org_id,
        subject=str(document.id),
    )
    await session.refresh(document)
    return await read_document(session, document, Role.OWNER)


async def read_document(session: AsyncSession, document: Document, role: Role) -> DocumentRead:
    content = await load(session, document.id)
    state = content.doc.get_update()
    return DocumentRead.model_validate(
        {
            **_columns(document),
            "role": role,
            "text": text_of(content.doc),
            "state": base64.b64encode(state).decode(),
            "size": len(state),
            "pending_updates": len(content.pending),
        }
    )


async def change_document(session: AsyncSession, document: Document, body: DocumentUpdate) -> None:
    if body.title is not None:
        document.title = body.title
    if body.editors is not None:
        document.editors = sorted(set(body.editors))
    if body.viewers is not None:
        document.viewers = sorted(set(body.viewers))
    document.viewers = sorted(set(document.viewers) - set(document.editors))
    if body.org_access is not None:
        document.org_access = body.org_access
    await session.flush()
    await session.refresh(document)


async def delete_document(session: AsyncSession, document: Document, actor: str) -> None:
    await Base.events.publish(
        session,
        "collaboration.document.deleted",
        {"document_id": str(document.id), "title": document.title, "actor": actor},
        org_id=document.org_id,
        subject=str(document.id),
    )
    await session.delete(document)
    await session.flush()


def list_query(principal: Principal) -> Select[Document]:
    return scoped(Document, principal.org_id).where(visible_to(principal))


# --- snapshots ---


def snapshot_read(snapshot: Snapshot) -> SnapshotRead:
    return SnapshotRead(
        id=snapshot.id,
        through_seq=snapshot.through_seq,
        updates_merged=snapshot.updates_merged,
        size=len(snapshot.state),
        created_at=snapshot.created_at,
    )


async def snapshot_content(
    session: AsyncSession, document: Document, snapshot_id: uuid.UUID
) -> SnapshotContent:
    snapshot = await OrgScoped(Snapshot, session, document.org_id, "snapshot").get(
        snapshot_id, Snapshot.id == snapshot_id, Snapshot.document_id == document.id
    )
    return SnapshotContent(
        **snapshot_read(snapshot).model_dump(),
        text=snapshot.text,
        state=base64.b64encode(snapshot.state).decode(),
    )


# --- comments ---


def _anchor(doc: Doc[Any], data: bytes | None) -> int | None:
    if data is None:
        return None
    text = doc.get(TEXT, type=Text)
    return StickyIndex.decode(data, text).get_index()


def comment_read(doc: Doc[Any], comment: Comment) -> CommentRead:
    start, end = _anchor(doc, comment.anchor_start), _anchor(doc, comment.anchor_end)
    quote = ""
    if start is not None and end is not None and start < end:
        quote = text_of(doc)[start:end]
    elif start is not None and end is not None:
        end = start  # the range's text was deleted: both ends meet where it was
    return CommentRead(
        id=comment.id,
        thread_id=comment.thread_id,
        author=comment.author,
        body=comment.body,
        start=start,
        end=end,
        quote=quote,
        original_quote=comment.quote,
        resolved=comment.resolved,
        resolved_by=comment.resolved_by,
        created_at=comment.created_at,
    )


async def add_comment(
    session: AsyncSession, document: Document, author: str, body: CommentCreate
) -> CommentRead:
    content = await load(session, document.id)
    comment = Comment(document_id=document.id, org_id=document.org_id, author=author, body=body.body)
    if body.thread_id is not None:
        if body.start is not None or body.end is not None:
            raise InvalidField("start", "a reply has no range of its own: leave start and end out")
        thread = await _comment(session, document, body.thread_id, "thread_id")
        if thread.thread_id is not None:
            raise InvalidField("thread_id", "reply to the thread's first comment")
        comment.thread_id = thread.id
    else:
        if body.start is None or body.end is None:
            raise InvalidField("start" if body.start is None else "end", "a new thread needs start and end")
        text = content.doc.get(TEXT, type=Text)
        length = len(text)
        if body.end > length:
            raise InvalidField("end", f"past the end of the text ({length} characters)")
        if body.start >= body.end:
            raise InvalidField("start", "must be before end")
        # The start sticks to the range's first character, the end to its last, so text typed at
        # either edge stays outside the range.
        comment.anchor_start = StickyIndex.new(text, body.start, Assoc.AFTER).encode()
        comment.anchor_end = StickyIndex.new(text, body.end, Assoc.BEFORE).encode()
        comment.quote = str(text)[body.start : body.end]
    session.add(comment)
    await session.flush()
    await session.refresh(comment)
    await Base.events.publish(
        session,
        "collaboration.document.commented",
        {
            "document_id": str(document.id),
            "title": document.title,
            "actor": author,
            "comment_id": str(comment.id),
            "thread_id": str(comment.thread_id) if comment.thread_id else None,
            "quote": comment.quote,
            "body": comment.body,
        },
        org_id=document.org_id,
        subject=str(document.id),
    )
    return comment_read(content.doc, comment)


async def _comment(session: AsyncSession, document: Document, comment_id: uuid.UUID, field: str) -> Comment:
    comment = await OrgScoped(Comment, session, document.org_id, "comment").find(
        Comment.id == comment_id, Comment.document_id == document.id
    )
    if comment is None:
        if field == "path":
            raise NotFound(f"no comment {comment_id}")
        raise InvalidField(field, f"no comment {comment_id} on this document")
    return comment


async def resolve(
    session: AsyncSession, document: Document, comment_id: uuid.UUID, resolved: bool, actor: str
) -> CommentRead:
    comment = await _comment(session, document, comment_id, "path")
    if comment.thread_id is not None:
        raise Problem("resolve the thread (its first comment), not a reply", status=409, slug="conflict")
    comment.resolved = resolved
    comment.resolved_by = actor if resolved else None
    await session.flush()
    content = await load(session, document.id)
    return comment_read(content.doc, comment)
