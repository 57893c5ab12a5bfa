"""Indexing, run by knowledge's own events: `knowledge.document.updated` chunks the document's latest
revision into `knowledge_chunk` (full text) and its vectors into embeddings; `.deleted` removes the
vectors. Both come through the outbox and the target's queue, so a job survives a restart, and the
inbox makes a redelivery harmless; a document already indexed at its revision is skipped.

Identity: a handler runs with no user request, so it calls embeddings with knowledge's workload token
for the event's organization alone (`context.acting_org`; `background_grants` in the descriptor),
never a user's token kept for later. An outage of embeddings raises, and the bus delivers the event
again; a refusal (a private collection and a provider-backed model) marks the document failed with
the reason, its full text indexed all the same."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import delete, func

from coder.services.knowledge import vectors
from coder.services.knowledge.chunking import chunk
from coder.services.knowledge.models import Chunk, Collection, Document
from coder.services.knowledge.schemas import IndexStatus
from coder.shared import context
from coder.shared.contracts.knowledge import DocumentDeleted, DocumentUpdated
from coder.shared.events import CloudEvent, EventContext
from coder.shared.repository import OrgScoped, owned_by

log = logging.getLogger(__name__)


def _org(event: CloudEvent) -> str:
    if not event.orgid:
        raise ValueError(f"event {event.id} has no orgid")
    return event.orgid


async def on_document_updated(event: CloudEvent, ctx: EventContext) -> None:
    org_id = _org(event)
    data = DocumentUpdated.model_validate(event.data)
    session = ctx.session
    document = await OrgScoped(Document, session, org_id, "document").find(
        Document.id == uuid.UUID(data.document_id), lock=True
    )
    if document is None:
        return  # deleted since
    if document.index_status == IndexStatus.INDEXED and document.indexed_revision == document.revision:
        return  # an earlier event indexed this revision already
    collection = await session.get(Collection, document.collection_id)
    if collection is None:
        return
    markdown = document.source_id is None
    pieces = chunk(document.path, document.content, markdown=markdown)
    await session.execute(delete(Chunk).where(owned_by(Chunk, org_id), Chunk.document_id == document.id))
    rows = [
        Chunk(
            id=uuid.uuid4(),
            org_id=org_id,
            collection_id=collection.id,
            source_id=document.source_id,
            document_id=document.id,
            revision=document.revision,
            ordinal=i,
            heading=piece.heading if not markdown else piece.heading or document.title,
            start_line=piece.start_line,
            end_line=piece.end_line,
            content=piece.text,
        )
        for i, piece in enumerate(pieces)
    ]
    session.add_all(rows)
    await session.flush()
    error = None
    if ctx.clients is None:
        error = "no service clients in this process: vectors not written"
    else:
        token = context.acting_org.set(org_id)
        try:
            error = await _write_vectors(ctx, collection, document, rows)
        finally:
            context.acting_org.reset(token)
    document.index_status = (IndexStatus.FAILED if error else IndexStatus.INDEXED).value
    document.index_error = error
    document.indexed_revision = document.revision
    document.indexed_at = func.now()
    await session.flush()


async def _write_vectors(
    ctx: EventContext, collection: Collection, document: Document, rows: list[Chunk]
) -> str | None:
    """None when the vectors are written; the reason when embeddings refused. An outage raises."""
    assert ctx.clients is not None
    try:
        if collection.private:
            name, owner = await vectors.model_source(ctx.clients, collection.embedding_model)
            if owner != vectors.LOCAL:
                return (
                    f"refused: the collection is private and {name} is provider-backed ({owner}); "
                    "its content is searchable by full text only"
                )
        await vectors.ensure_collection(ctx.clients, collection.id, collection.embedding_model)
        items = [
            {
                "id": str(row.id),
                "text": f"{row.heading}\n{row.content}" if row.heading else row.content,
                "metadata": {
                    "document_id": str(document.id),
                    "source_id": str(document.source_id) if document.source_id else None,
                    "revision": document.revision,
                },
            }
            for row in rows
        ]
        await vectors.replace_document(ctx.clients, collection.id, document.id, items)
    except vectors.VectorError as exc:
        if not exc.permanent:
            raise
        log.warning("indexing refused", extra={"document_id": str(document.id), "error": str(exc)})
        return str(exc)[:2000]
    return None


async def on_document_deleted(event: CloudEvent, ctx: EventContext) -> None:
    org_id = _org(event)
    data = DocumentDeleted.model_validate(event.data)
    if ctx.clients is None:
        return
    token = context.acting_org.set(org_id)
    try:
        await vectors.delete_document(ctx.clients, uuid.UUID(data.collection_id), uuid.UUID(data.document_id))
    except vectors.VectorError as exc:
        if not exc.permanent:
            raise
    finally:
        context.acting_org.reset(token)
