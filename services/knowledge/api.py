"""HTTP routes of `knowledge`. Paths are relative to `/api/knowledge` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response, status
from sqlalchemy import or_

from coder.services.knowledge import archives, service
from coder.services.knowledge.config import KnowledgeSettings
from coder.services.knowledge.models import Collection, Document, Revision, Source
from coder.services.knowledge.schemas import (
    CollectionCreate,
    CollectionRead,
    CollectionUpdate,
    DocumentCreate,
    DocumentRead,
    DocumentSummary,
    DocumentUpdate,
    FileIn,
    FilesPush,
    RevisionRead,
    RevisionSummary,
    SearchQuery,
    SearchRead,
    SourceCreate,
    SourceRead,
    SyncRead,
)
from coder.services.knowledge.search import search as hybrid_search
from coder.services.knowledge.service import Reader
from coder.shared.auth import Principal, require
from coder.shared.db import ReadSessionDep, SessionDep
from coder.shared.deps import ClientsDep, settings_of
from coder.shared.errors import InvalidField, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["knowledge"])

SettingsDep = Annotated[KnowledgeSettings, Depends(settings_of(KnowledgeSettings))]
Read = Annotated[Principal, require("knowledge:read")]
Write = Annotated[Principal, require("knowledge:write")]
Admin = Annotated[Principal, require("knowledge:admin")]
RevisionNumber = Annotated[int, Path(ge=1, le=2_000_000_000)]


def _document(document: Document) -> DocumentRead:
    return DocumentRead(**service.summary(document).model_dump(), content=document.content)


# --- collections ---


@router.post(
    "/collections",
    response_model=CollectionRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_collection(
    body: CollectionCreate, session: SessionDep, clients: ClientsDep, settings: SettingsDep, principal: Admin
) -> CollectionRead:
    """Create a collection. `private` keeps its content from every external provider (its vectors
    must come from a local model: a provider-backed `embedding_model` is a 422); `teams` restricts
    who reads it."""
    created = await service.create_collection(session, clients, principal, body, settings.embedding_model)
    return CollectionRead.model_validate(created)


@router.get("/collections", response_model=Page[CollectionRead])
async def list_collections(
    session: SessionDep, clients: ClientsDep, principal: Read, params: PageDep
) -> Page[CollectionRead]:
    """The collections the caller may read, by name."""
    query = scoped(Collection, principal.org_id)
    if not principal.can(service.ADMIN):
        teams = sorted(await Reader(principal, clients).teams())
        query = query.where(or_(Collection.teams == [], Collection.teams.overlap(teams)))
    rows = await paginate(session, query, (Collection.name, Collection.id), params)
    return rows.page(CollectionRead.model_validate)


@router.get("/collections/{collection_id}", response_model=CollectionRead)
async def read_collection(
    collection_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read
) -> CollectionRead:
    return CollectionRead.model_validate(
        await service.get_collection(session, Reader(principal, clients), collection_id)
    )


@router.patch(
    "/collections/{collection_id}", response_model=CollectionRead, responses=problem_responses({409})
)
async def update_collection(
    collection_id: uuid.UUID,
    body: CollectionUpdate,
    session: SessionDep,
    clients: ClientsDep,
    principal: Admin,
) -> CollectionRead:
    """Rename, describe, make private (refused while its model is provider-backed) or restrict to teams."""
    updated = await service.update_collection(
        session, clients, Reader(principal, clients), collection_id, body
    )
    return CollectionRead.model_validate(updated)


@router.delete("/collections/{collection_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_collection(
    collection_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Admin
) -> Response:
    """Delete a collection with its documents, sources and vectors. Emits `knowledge.document.deleted`
    for each document."""
    await service.delete_collection(session, clients, Reader(principal, clients), collection_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- documents ---


@router.post(
    "/collections/{collection_id}/documents", response_model=DocumentRead, status_code=status.HTTP_201_CREATED
)
async def create_document(
    collection_id: uuid.UUID, body: DocumentCreate, session: SessionDep, clients: ClientsDep, principal: Write
) -> DocumentRead:
    """Add a Markdown document (revision 1), indexed shortly after (`index.status` pending, then
    indexed or failed). Emits `knowledge.document.created` and `knowledge.document.updated`."""
    collection = await service.get_collection(session, Reader(principal, clients), collection_id)
    path = body.path or body.title
    document = await service.create_document(
        session, principal, collection, title=body.title, content=body.content, path=path
    )
    return _document(document)


@router.get("/collections/{collection_id}/documents", response_model=Page[DocumentSummary])
async def list_documents(
    collection_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read, params: PageDep
) -> Page[DocumentSummary]:
    """The collection's documents and code files, by path, with their index status (no content)."""
    # The page first, so that a bad cursor is a 400 whether or not the collection may be read.
    query = scoped(Document, principal.org_id).where(Document.collection_id == collection_id)
    rows = await paginate(session, query, (Document.path, Document.id), params)
    await service.get_collection(session, Reader(principal, clients), collection_id)
    return rows.page(service.summary)


@router.get("/documents/{document_id}", response_model=DocumentRead)
async def read_document(
    document_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read
) -> DocumentRead:
    """A document (or code file): its latest content and revision, and where its indexing stands."""
    return _document(await service.get_document(session, Reader(principal, clients), document_id))


@router.patch("/documents/{document_id}", response_model=DocumentRead)
async def update_document(
    document_id: uuid.UUID, body: DocumentUpdate, session: SessionDep, clients: ClientsDep, principal: Write
) -> DocumentRead:
    """Edit a document: a new revision, indexed again. Emits `knowledge.document.updated`."""
    document = await service.get_document(session, Reader(principal, clients), document_id, lock=True)
    title = body.title if body.title is not None else document.title
    content = body.content if body.content is not None else document.content
    if title == document.title and content == document.content:
        return _document(document)
    return _document(await service.revise(session, principal, document, title=title, content=content))


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Write
) -> Response:
    """Delete a document with its revisions and chunks. Emits `knowledge.document.deleted`."""
    document = await service.get_document(session, Reader(principal, clients), document_id, lock=True)
    await service.delete_document(session, principal, document)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/documents/{document_id}/reindex", response_model=DocumentRead, status_code=status.HTTP_202_ACCEPTED
)
async def reindex_document(
    document_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Write
) -> DocumentRead:
    """Index the document again (after a failure, say). Emits `knowledge.document.updated`."""
    document = await service.get_document(session, Reader(principal, clients), document_id, lock=True)
    return _document(await service.reindex(session, principal, document))


@router.get("/documents/{document_id}/revisions", response_model=Page[RevisionSummary])
async def list_revisions(
    document_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read, params: PageDep
) -> Page[RevisionSummary]:
    """The document's revisions, newest first."""
    query = scoped(Revision, principal.org_id).where(Revision.document_id == document_id)
    rows = await paginate(session, query, (Revision.revision,), params, descending=True)
    await service.get_document(session, Reader(principal, clients), document_id)
    return rows.page(RevisionSummary.model_validate)


@router.get("/documents/{document_id}/revisions/{revision}", response_model=RevisionRead)
async def read_revision(
    document_id: uuid.UUID,
    revision: RevisionNumber,
    session: SessionDep,
    clients: ClientsDep,
    principal: Read,
) -> RevisionRead:
    document = await service.get_document(session, Reader(principal, clients), document_id)
    return RevisionRead.model_validate(
        await service.get_revision(session, principal.org_id, document, revision)
    )


@router.post("/documents/{document_id}/revisions/{revision}/restore", response_model=DocumentRead)
async def restore_revision(
    document_id: uuid.UUID,
    revision: RevisionNumber,
    session: SessionDep,
    clients: ClientsDep,
    principal: Write,
) -> DocumentRead:
    """Make an old revision current again: its title and content become a new revision (history is
    never rewritten), indexed again. Emits `knowledge.document.updated`."""
    document = await service.get_document(session, Reader(principal, clients), document_id, lock=True)
    old = await service.get_revision(session, principal.org_id, document, revision)
    restored = await service.revise(
        session, principal, document, title=old.title, content=old.content, restored_from=old.revision
    )
    return _document(restored)


# --- code sources ---


@router.post(
    "/collections/{collection_id}/sources",
    response_model=SourceRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_source(
    collection_id: uuid.UUID, body: SourceCreate, session: SessionDep, clients: ClientsDep, principal: Write
) -> SourceRead:
    """A code source (a repository) in the collection: fill it with an archive or pushed files."""
    collection = await service.get_collection(session, Reader(principal, clients), collection_id)
    return SourceRead.model_validate(await service.create_source(session, principal, collection, body.name))


@router.get("/collections/{collection_id}/sources", response_model=Page[SourceRead])
async def list_sources(
    collection_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read, params: PageDep
) -> Page[SourceRead]:
    query = scoped(Source, principal.org_id).where(Source.collection_id == collection_id)
    rows = await paginate(session, query, (Source.name, Source.id), params)
    await service.get_collection(session, Reader(principal, clients), collection_id)
    return rows.page(SourceRead.model_validate)


@router.get("/sources/{source_id}", response_model=SourceRead)
async def read_source(
    source_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Read
) -> SourceRead:
    source, _ = await service.get_source(session, Reader(principal, clients), source_id)
    return SourceRead.model_validate(source)


@router.delete("/sources/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(
    source_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Write
) -> Response:
    """Delete a code source with its files. Emits `knowledge.document.deleted` for each file."""
    source, _ = await service.get_source(session, Reader(principal, clients), source_id)
    await service.delete_source(session, principal, source)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/sources/{source_id}/files", response_model=SyncRead)
async def push_files(
    source_id: uuid.UUID, body: FilesPush, session: SessionDep, clients: ClientsDep, principal: Write
) -> SyncRead:
    """The IDE's push: write files (path and content; unchanged content is no new revision) and
    delete paths. Each new or changed file emits `knowledge.document.updated` and is indexed."""
    source, collection = await service.get_source(session, Reader(principal, clients), source_id)
    return await service.sync_files(session, principal, source, collection, body.files, body.delete)


# Any content type is read: the archive's kind comes from its first bytes (zip or tar, gzipped or not).
ARCHIVE_TYPES = ("application/octet-stream",)


@router.put(
    "/sources/{source_id}/archive",
    response_model=SyncRead,
    responses=problem_responses({400, 413}),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A .tar.gz (or .tar) or .zip of the repository",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in ARCHIVE_TYPES},
        }
    },
)
async def upload_archive(
    source_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    clients: ClientsDep,
    settings: SettingsDep,
    principal: Write,
) -> SyncRead:
    """Replace the source's files with an archive's text files (binary and oversized members are
    skipped, files no longer in it deleted). Paths climbing out of the archive are a 422, an archive
    or its unpacked files over the limits a 413, both naming `body`."""
    source, collection = await service.get_source(session, Reader(principal, clients), source_id)
    limits = archives.Limits(
        archive_bytes=settings.max_archive_bytes,
        unpacked_bytes=settings.max_unpacked_bytes,
        files=settings.max_files,
        file_bytes=settings.max_file_bytes,
    )
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limits.archive_bytes:
            raise archives.TooLarge(f"body: the archive is larger than {limits.archive_bytes} bytes")
    if not data:
        raise InvalidField("body", "send the archive's bytes")
    files = [FileIn(path=path, content=text) for path, text in archives.files(bytes(data), limits)]
    return await service.sync_files(session, principal, source, collection, files, [], replace_all=True)


# --- search ---


@router.post("/search", response_model=SearchRead)
async def search(
    body: SearchQuery, session: ReadSessionDep, clients: ClientsDep, principal: Read
) -> SearchRead:
    """Hybrid search over the collections the caller may read (optionally only some collections,
    teams' collections or code sources): full text and vector k-NN fused by reciprocal rank. Each hit
    is a snippet citing its collection, document or file path, revision and heading path or lines;
    `private` marks content that must never go to an external provider."""
    return await hybrid_search(session, Reader(principal, clients), body)
