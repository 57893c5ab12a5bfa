"""Collections of vectors: create and delete them, upsert and delete items, k-NN search."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import ColumnElement, Select, cast, delete, func, literal_column
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.embeddings import service
from coder.services.embeddings.config import EmbeddingsSettings
from coder.services.embeddings.models import INDEXED_DIMENSIONS, Base, Collection, Item
from coder.services.embeddings.schemas import (
    CollectionCreate,
    DeleteRead,
    Hit,
    ItemsDelete,
    ItemsUpsert,
    Search,
    SearchRead,
    UpsertRead,
    Usage,
)
from coder.shared.errors import Conflict, InvalidField, NotFound
from coder.shared.http import ServiceClients
from coder.shared.repository import OrgScoped, owned_by, scoped


def _search_settings(ef: int) -> tuple[ColumnElement[Any], ...]:
    """Columns setting, for the search's connection, the HNSW walk's candidates (`ef_search`) and
    iterative scans, which go on past them until enough rows pass a metadata filter (pgvector >= 0.8).
    For the connection, not a transaction (a search has none): they stay with the pooled connection,
    read by HNSW scans only, and every search sets both first."""
    return (
        func.set_config("hnsw.ef_search", str(ef), False),
        func.set_config("hnsw.iterative_scan", "relaxed_order", False),
    )


def _collections(session: AsyncSession, org_id: str) -> OrgScoped[Collection]:
    return OrgScoped(Collection, session, org_id, "collection")


async def get(session: AsyncSession, org_id: str, name: str) -> Collection:
    return await _collections(session, org_id).get(name, Collection.name == name)


async def create(
    session: AsyncSession, settings: EmbeddingsSettings, org_id: str, body: CollectionCreate
) -> Collection:
    model = service.resolve(settings, body.model, body.dimensions)
    if model.dimensions not in INDEXED_DIMENSIONS:
        raise InvalidField(
            "body.dimensions",
            f"a collection's vectors have one of {', '.join(map(str, INDEXED_DIMENSIONS))} dimensions "
            f"({model.name} gives {model.dimensions}: ask for fewer where it allows)",
        )
    if await _collections(session, org_id).find(Collection.name == body.name) is not None:
        raise Conflict(
            f"a collection named {body.name} exists", errors=[{"field": "body.name", "message": "taken"}]
        )
    collection = Collection(
        id=uuid.uuid4(),
        org_id=org_id,
        name=body.name,
        description=body.description,
        model=model.name,
        dimensions=model.dimensions,
    )
    session.add(collection)
    try:
        await session.flush()
    except IntegrityError:  # created concurrently by another request
        raise Conflict(f"a collection named {body.name} exists") from None
    await Base.events.publish(
        session,
        "embeddings.collection.created",
        {
            "id": str(collection.id),
            "name": collection.name,
            "model": collection.model,
            "dimensions": collection.dimensions,
        },
        org_id=org_id,
        subject=collection.name,
    )
    await session.refresh(collection)
    return collection


async def remove(session: AsyncSession, org_id: str, name: str) -> None:
    collection = await get(session, org_id, name)
    await session.execute(delete(Item).where(owned_by(Item, org_id), Item.collection_id == collection.id))
    await session.delete(collection)
    await Base.events.publish(
        session,
        "embeddings.collection.deleted",
        {"id": str(collection.id), "name": collection.name},
        org_id=org_id,
        subject=collection.name,
    )
    await session.flush()


def _model(settings: EmbeddingsSettings, collection: Collection) -> service.Model:
    spec = settings.catalog().get(collection.model)
    if spec is None:
        raise InvalidField("body.query", f"the collection's model {collection.model!r} is no longer offered")
    return service.Model(collection.model, spec, collection.dimensions)


def _vector(values: list[float], dimensions: int, field: str) -> np.ndarray:
    if len(values) != dimensions:
        raise InvalidField(field, f"has {len(values)} numbers; the collection's vectors have {dimensions}")
    vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all() or not np.any(vector):
        raise InvalidField(field, "must be finite float32 numbers, not all zero")
    return vector


async def upsert(
    session: AsyncSession,
    clients: ServiceClients,
    settings: EmbeddingsSettings,
    org_id: str,
    name: str,
    body: ItemsUpsert,
) -> UpsertRead:
    collection = await get(session, org_id, name)
    seen: set[str] = set()
    vectors: dict[int, np.ndarray] = {}
    to_embed: list[int] = []
    for i, item in enumerate(body.items):
        if item.id in seen:
            raise InvalidField(f"body.items.{i}.id", f"{item.id!r} is given twice")
        seen.add(item.id)
        if (item.text is None) == (item.embedding is None):
            raise InvalidField(f"body.items.{i}", "give either `text` or `embedding`")
        if item.embedding is not None:
            vectors[i] = _vector(item.embedding, collection.dimensions, f"body.items.{i}.embedding")
        else:
            to_embed.append(i)
    computed = 0
    if to_embed:
        model = _model(settings, collection)
        texts = [body.items[i].text or "" for i in to_embed]
        result = await service.embed(session, clients, org_id, model, texts)
        computed = result.computed
        for i, vector in zip(to_embed, result.vectors, strict=True):
            vectors[i] = vector
    rows: list[dict[str, Any]] = [
        {
            "collection_id": collection.id,
            "id": item.id,
            "org_id": org_id,
            "text": item.text,
            "metadata": item.metadata,
            "dimensions": collection.dimensions,
            "embedding": vectors[i],
        }
        for i, item in enumerate(body.items)
    ]
    statement = insert(Item).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[Item.collection_id, Item.id],
            set_={
                "text": statement.excluded.text,
                "metadata": statement.excluded.metadata,
                "embedding": statement.excluded.embedding,
                "updated_at": func.now(),
            },
        )
    )
    return UpsertRead(upserted=len(rows), embedded=computed)


async def get_item(session: AsyncSession, org_id: str, name: str, item_id: str) -> Item:
    collection = await get(session, org_id, name)
    return await OrgScoped(Item, session, org_id, "item").get(
        item_id, Item.collection_id == collection.id, Item.id == item_id
    )


async def delete_items(session: AsyncSession, org_id: str, name: str, body: ItemsDelete) -> DeleteRead:
    if body.ids is None and body.filter is None:
        raise InvalidField("body", "give `ids`, `filter` or both")
    collection = await get(session, org_id, name)
    statement = delete(Item).where(owned_by(Item, org_id), Item.collection_id == collection.id)
    if body.ids is not None:
        statement = statement.where(Item.id.in_(body.ids))
    if body.filter is not None:
        statement = statement.where(Item.meta.contains(body.filter))
    deleted = (await session.execute(statement.returning(Item.id))).all()
    return DeleteRead(deleted=len(deleted))


def nearest(
    org_id: str, collection: Collection, vector: np.ndarray, k: int, where: dict[str, Any]
) -> Select[Any]:
    """The `k` items of `collection` nearest to `vector` whose metadata contains `where` (their id,
    text and metadata, not their vectors), with their cosine distance (column `distance`), served by
    the HNSW index of the collection's size."""
    size = collection.dimensions
    # The same expression and predicate as the partial index of this size, with the size written
    # out: a generic plan of a prepared statement cannot match a bound parameter to the index's
    # predicate.
    indexed = cast(Item.embedding, Vector(size))
    distance = indexed.cosine_distance(cast(vector, Vector(size))).label("distance")
    query = (
        scoped(Item, org_id)
        .with_only_columns(Item.id, Item.text, Item.meta, distance)
        .where(Item.dimensions == literal_column(str(int(size))), Item.collection_id == collection.id)
        .order_by(distance)
        .limit(k)
    )
    return query.where(Item.meta.contains(where)) if where else query


async def search(
    session: AsyncSession,
    clients: ServiceClients,
    settings: EmbeddingsSettings,
    org_id: str,
    name: str,
    body: Search,
) -> SearchRead:
    # The collection, and the search's settings, in one round trip.
    ef = max(settings.search_ef, body.k)
    row = (
        await session.execute(
            scoped(Collection, org_id).where(Collection.name == name).add_columns(*_search_settings(ef))
        )
    ).first()
    if row is None:
        raise NotFound(f"no collection {name}")
    collection: Collection = row[0]
    if (body.query is None) == (body.embedding is None):
        raise InvalidField("body", "give either `query` or `embedding`")
    tokens = 0
    if body.embedding is not None:
        vector = _vector(body.embedding, collection.dimensions, "body.embedding")
    else:
        model = _model(settings, collection)
        if model.spec.group is None:
            # The local model computes one query sooner than the cache could answer it (two round
            # trips): the cache is for what costs more, provider calls and whole documents.
            found, counts = await service.compute(clients, model, [body.query or ""])
            vector, tokens = found[0], counts[0]
        else:
            result = await service.embed(session, clients, org_id, model, [body.query or ""])
            vector, tokens = result.vectors[0], result.tokens
    query = nearest(org_id, collection, vector, body.k, body.filter)
    # relaxed_order may return rows slightly out of order: sorted again here.
    rows = sorted((await session.execute(query)).all(), key=lambda row: row.distance)
    hits = [Hit(id=row.id, score=1.0 - float(row.distance), text=row.text, metadata=row.meta) for row in rows]
    return SearchRead(
        data=hits, model=collection.model, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
    )
