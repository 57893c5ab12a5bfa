"""Collections, documents with their revisions, and code sources; who may read what.

A collection with `teams` is readable only by members of one of them (and by holders of
`knowledge:admin`); to anyone else it, its documents and its sources answer 404, as another org's
would. The caller's teams come from the gateway (`GET /api/users/me`, with the caller's own token),
asked only when a restricted collection is in the way."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.knowledge import archives, vectors
from coder.services.knowledge.models import Base, Chunk, Collection, Document, Revision, Source
from coder.services.knowledge.schemas import (
    CollectionCreate,
    CollectionUpdate,
    DocumentSummary,
    FileIn,
    IndexRead,
    IndexStatus,
    SyncRead,
)
from coder.shared.auth import Principal
from coder.shared.errors import Conflict, InvalidField, NotFound
from coder.shared.http import ServiceClients
from coder.shared.repository import OrgScoped, owned_by, scoped

ADMIN = "knowledge:admin"


@dataclass
class Reader:
    """Who reads: the principal, and (once asked) the teams they belong to."""

    principal: Principal
    clients: ServiceClients
    _teams: set[str] | None = field(default=None)

    async def teams(self) -> set[str]:
        if self._teams is None:
            self._teams = set()
            if self.principal.actor is None:  # a workload token names no user of the gateway's
                response = await self.clients.client("gateway").get("/api/users/me")
                if response.status_code == 200:
                    self._teams = {str(t) for t in response.json().get("teams", [])}
        return self._teams

    async def may_read(self, collection: Collection) -> bool:
        if not collection.teams or self.principal.can(ADMIN):
            return True
        return bool(set(collection.teams) & await self.teams())


# --- collections ---


async def get_collection(session: AsyncSession, reader: Reader, collection_id: uuid.UUID) -> Collection:
    collection = await OrgScoped(Collection, session, reader.principal.org_id, "collection").get(
        collection_id, Collection.id == collection_id
    )
    if not await reader.may_read(collection):
        raise NotFound(f"collection {collection_id} not found")
    return collection


async def readable(
    session: AsyncSession, reader: Reader, collections: Iterable[Collection]
) -> list[Collection]:
    return [c for c in collections if await reader.may_read(c)]


async def _check_private_model(clients: ServiceClients, private: bool, model: str | None, field: str) -> None:
    """A private collection's vectors must come from a model computed here, never at a provider."""
    if not private:
        return
    try:
        name, owner = await vectors.model_source(clients, model)
    except vectors.VectorError as exc:
        if exc.permanent and model is not None:
            raise InvalidField(field, str(exc)) from None
        return  # embeddings unreachable: indexing refuses it then, if it must
    if owner != vectors.LOCAL:
        raise InvalidField(
            field,
            f"a private collection's content never goes to an external provider, and {name} is "
            f"provider-backed ({owner}): choose a local model",
        )


async def create_collection(
    session: AsyncSession,
    clients: ServiceClients,
    principal: Principal,
    body: CollectionCreate,
    model: str | None,
) -> Collection:
    org_id = principal.org_id
    chosen = body.embedding_model or model
    await _check_private_model(clients, body.private, chosen, "body.embedding_model")
    if await OrgScoped(Collection, session, org_id, "collection").find(Collection.name == body.name):
        raise Conflict(
            f"a collection named {body.name} exists", errors=[{"field": "body.name", "message": "taken"}]
        )
    collection = Collection(
        id=uuid.uuid4(),
        org_id=org_id,
        name=body.name,
        description=body.description,
        private=body.private,
        teams=sorted(set(body.teams)),
        embedding_model=chosen,
        created_by=principal.subject,
    )
    session.add(collection)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"a collection named {body.name} exists") from None
    await session.refresh(collection)
    return collection


async def update_collection(
    session: AsyncSession,
    clients: ServiceClients,
    reader: Reader,
    collection_id: uuid.UUID,
    body: CollectionUpdate,
) -> Collection:
    collection = await get_collection(session, reader, collection_id)
    if body.private:
        await _check_private_model(clients, True, collection.embedding_model, "body.private")
    if body.name is not None and body.name != collection.name:
        taken = await OrgScoped(Collection, session, reader.principal.org_id, "collection").find(
            Collection.name == body.name
        )
        if taken is not None:
            raise Conflict(
                f"a collection named {body.name} exists", errors=[{"field": "body.name", "message": "taken"}]
            )
        collection.name = body.name
    if body.description is not None:
        collection.description = body.description
    if body.private is not None:
        collection.private = body.private
    if body.teams is not None:
        collection.teams = sorted(set(body.teams))
    await session.flush()
    await session.refresh(collection)
    return collection


async def delete_collection(
    session: AsyncSession, clients: ServiceClients, reader: Reader, collection_id: uuid.UUID
) -> None:
    collection = await get_collection(session, reader, collection_id)
    documents = (
        await session.execute(
            scoped(Document, reader.principal.org_id).where(Document.collection_id == collection.id)
        )
    ).scalars()
    for document in documents:
        await Base.events.publish(
            session, "knowledge.document.deleted", **_event(document, reader.principal.subject)
        )
    await session.delete(collection)
    await session.flush()
    # On failure its items are found by nothing once the chunks are gone.
    with contextlib.suppress(vectors.VectorError):
        await vectors.drop_collection(clients, collection.id)


# --- documents ---


def summary(document: Document) -> DocumentSummary:
    return DocumentSummary(
        id=document.id,
        collection_id=document.collection_id,
        source_id=document.source_id,
        path=document.path,
        title=document.title,
        revision=document.revision,
        index=IndexRead(
            status=IndexStatus(document.index_status),
            error=document.index_error,
            revision=document.indexed_revision,
            indexed_at=document.indexed_at,
        ),
        updated_at=document.updated_at,
    )


def _event(document: Document, actor: str) -> dict[str, Any]:
    """The data, org and subject of a `knowledge.document.*` event about `document`."""
    return {
        "data": {
            "document_id": str(document.id),
            "collection_id": str(document.collection_id),
            "source_id": str(document.source_id) if document.source_id else None,
            "path": document.path,
            "revision": document.revision,
            "actor": actor,
        },
        "org_id": document.org_id,
        "subject": str(document.id),
    }


async def get_document(
    session: AsyncSession, reader: Reader, document_id: uuid.UUID, *, lock: bool = False
) -> Document:
    document = await OrgScoped(Document, session, reader.principal.org_id, "document").get(
        document_id, Document.id == document_id, lock=lock
    )
    collection = await session.get(Collection, document.collection_id)
    if collection is None or not await reader.may_read(collection):
        raise NotFound(f"document {document_id} not found")
    return document


async def create_document(
    session: AsyncSession,
    principal: Principal,
    collection: Collection,
    *,
    title: str,
    content: str,
    path: str,
    source_id: uuid.UUID | None = None,
) -> Document:
    document = Document(
        id=uuid.uuid4(),
        org_id=principal.org_id,
        collection_id=collection.id,
        source_id=source_id,
        path=path,
        title=title,
        content=content,
        revision=1,
        index_status=IndexStatus.PENDING.value,
        updated_by=principal.subject,
    )
    session.add(document)
    session.add(
        Revision(
            document_id=document.id,
            revision=1,
            org_id=principal.org_id,
            title=title,
            content=content,
            created_by=principal.subject,
        )
    )
    await session.flush()
    await session.refresh(document)
    await Base.events.publish(session, "knowledge.document.created", **_event(document, principal.subject))
    await Base.events.publish(session, "knowledge.document.updated", **_event(document, principal.subject))
    return document


async def revise(
    session: AsyncSession,
    principal: Principal,
    document: Document,
    *,
    title: str,
    content: str,
    restored_from: int | None = None,
) -> Document:
    """A new revision of `document` (the caller holds its row lock), to be indexed."""
    document.revision += 1
    document.title = title
    document.content = content
    document.index_status = IndexStatus.PENDING.value
    document.index_error = None
    document.updated_by = principal.subject
    session.add(
        Revision(
            document_id=document.id,
            revision=document.revision,
            org_id=principal.org_id,
            title=title,
            content=content,
            restored_from=restored_from,
            created_by=principal.subject,
        )
    )
    await session.flush()
    await session.refresh(document)
    await Base.events.publish(session, "knowledge.document.updated", **_event(document, principal.subject))
    return document


async def reindex(session: AsyncSession, principal: Principal, document: Document) -> Document:
    document.index_status = IndexStatus.PENDING.value
    document.index_error = None
    document.indexed_revision = None
    await session.flush()
    await session.refresh(document)
    await Base.events.publish(session, "knowledge.document.updated", **_event(document, principal.subject))
    return document


async def delete_document(session: AsyncSession, principal: Principal, document: Document) -> None:
    await Base.events.publish(session, "knowledge.document.deleted", **_event(document, principal.subject))
    await session.delete(document)
    await session.flush()


async def get_revision(session: AsyncSession, org_id: str, document: Document, revision: int) -> Revision:
    return await OrgScoped(Revision, session, org_id, "revision").get(
        revision, Revision.document_id == document.id, Revision.revision == revision
    )


# --- code sources ---


async def get_source(
    session: AsyncSession, reader: Reader, source_id: uuid.UUID
) -> tuple[Source, Collection]:
    source = await OrgScoped(Source, session, reader.principal.org_id, "source").get(
        source_id, Source.id == source_id
    )
    collection = await session.get(Collection, source.collection_id)
    if collection is None or not await reader.may_read(collection):
        raise NotFound(f"source {source_id} not found")
    return source, collection


async def create_source(
    session: AsyncSession, principal: Principal, collection: Collection, name: str
) -> Source:
    taken = await OrgScoped(Source, session, principal.org_id, "source").find(
        Source.collection_id == collection.id, Source.name == name
    )
    if taken is not None:
        raise Conflict(
            f"the collection has a source named {name}", errors=[{"field": "body.name", "message": "taken"}]
        )
    source = Source(id=uuid.uuid4(), org_id=principal.org_id, collection_id=collection.id, name=name)
    session.add(source)
    await session.flush()
    await session.refresh(source)
    return source


def _file_path(path: str, field: str) -> str:
    checked = archives.safe_path(path, field)
    if checked is None:
        raise InvalidField(field, f"{path!r} names a directory, not a file")
    return checked


async def sync_files(
    session: AsyncSession,
    principal: Principal,
    source: Source,
    collection: Collection,
    files: list[FileIn],
    remove: list[str],
    *,
    replace_all: bool = False,
    skipped: list[str] | None = None,
) -> SyncRead:
    """Write the files into the source: new paths become documents, changed ones new revisions, the
    same content nothing; `remove` (or, with `replace_all`, every path not in `files`) is deleted."""
    wanted: dict[str, str] = {}
    for i, item in enumerate(files):
        path = _file_path(item.path, f"body.files.{i}.path")
        if path in wanted:
            raise InvalidField(f"body.files.{i}.path", f"{path!r} is given twice")
        wanted[path] = item.content
    doomed = {_file_path(p, f"body.delete.{i}") for i, p in enumerate(remove)}
    if doomed & set(wanted):
        raise InvalidField("body.delete", "a path is both written and deleted")
    existing = {
        d.path: d
        for d in (
            await session.execute(
                scoped(Document, principal.org_id).where(Document.source_id == source.id).with_for_update()
            )
        ).scalars()
    }
    if replace_all:
        doomed = set(existing) - set(wanted)
    added = updated = unchanged = deleted = 0
    for path, content in wanted.items():
        document = existing.get(path)
        title = PurePosixPath(path).name
        if document is None:
            await create_document(
                session, principal, collection, title=title, content=content, path=path, source_id=source.id
            )
            added += 1
        elif document.content == content:
            unchanged += 1
        else:
            await revise(session, principal, document, title=title, content=content)
            updated += 1
    for path in sorted(doomed):
        document = existing.get(path)
        if document is not None:
            await delete_document(session, principal, document)
            deleted += 1
    source.updated_at = func.now()
    await session.flush()
    return SyncRead(added=added, updated=updated, unchanged=unchanged, deleted=deleted, skipped=skipped or [])


async def delete_source(session: AsyncSession, principal: Principal, source: Source) -> None:
    documents = (
        await session.execute(scoped(Document, principal.org_id).where(Document.source_id == source.id))
    ).scalars()
    for document in documents:
        await Base.events.publish(
            session, "knowledge.document.deleted", **_event(document, principal.subject)
        )
    await session.execute(
        delete(Chunk).where(owned_by(Chunk, principal.org_id), Chunk.source_id == source.id)
    )
    await session.delete(source)
    await session.flush()
