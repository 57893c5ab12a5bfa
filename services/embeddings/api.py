"""HTTP routes of `embeddings`. Paths are relative to `/api/embeddings` at the gateway.

`/v1/embeddings` and `/v1/models` speak OpenAI's embeddings API (the `openai` SDK works against
`<gateway>/api/embeddings/v1`); `/v1/collections` stores vectors and searches them."""

from __future__ import annotations

import binascii
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Response, status

from coder.services.embeddings import collections, service
from coder.services.embeddings.config import EmbeddingsSettings
from coder.services.embeddings.models import Collection, Item
from coder.services.embeddings.schemas import (
    MAX_INPUT_CHARS,
    MAX_INPUTS,
    MAX_REQUEST_CHARS,
    NAME_PATTERN,
    CollectionCreate,
    CollectionRead,
    DeleteRead,
    EmbeddingRequest,
    EmbeddingResponse,
    ItemRead,
    ItemsDelete,
    ItemsUpsert,
    ModelList,
    ModelRead,
    Search,
    SearchRead,
    UpsertRead,
)
from coder.shared.auth import Principal, require
from coder.shared.db import AutocommitDep, ReadSessionDep, SessionDep
from coder.shared.deps import ClientsDep, settings_of
from coder.shared.errors import InvalidField, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["embeddings"])

SettingsDep = Annotated[EmbeddingsSettings, Depends(settings_of(EmbeddingsSettings))]
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
ItemIdPath = Annotated[str, Path(min_length=1, max_length=255)]


def _texts(body: EmbeddingRequest) -> list[str]:
    """`input` as a list of texts, or a 422 naming what breaks OpenAI's rules or this API's limits.

    Each rule is one pass in C over all the texts (a request has up to 2048); only a broken one
    looks for the text that breaks it."""
    value = body.input
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise InvalidField("body.input", "give at least one text")
    if len(texts) > MAX_INPUTS:
        raise InvalidField("body.input", f"at most {MAX_INPUTS} texts in one request")
    try:
        total = len("".join(texts))  # type: ignore[arg-type]
    except TypeError:
        raise InvalidField("body.input", "token arrays are not accepted: send the texts themselves") from None
    strings: list[str] = texts  # type: ignore[assignment]

    def where(i: int) -> str:
        return "body.input" if isinstance(value, str) else f"body.input.{i}"

    if not all(strings):
        raise InvalidField(where(strings.index("")), "must not be empty")
    if max(map(len, strings)) > MAX_INPUT_CHARS:
        longest = next(i for i, one in enumerate(strings) if len(one) > MAX_INPUT_CHARS)
        raise InvalidField(where(longest), f"at most {MAX_INPUT_CHARS} characters")
    if total > MAX_REQUEST_CHARS:
        raise InvalidField("body.input", f"at most {MAX_REQUEST_CHARS} characters in all")
    return strings


@router.post("/embeddings", response_model=EmbeddingResponse, responses=problem_responses({502}))
async def create_embeddings(
    body: EmbeddingRequest,
    connection: AutocommitDep,
    clients: ClientsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("embeddings:embed")],
) -> Response:
    """OpenAI's embeddings API: a vector of unit length per input text. Texts this organization
    embedded before with the same model and size come from the cache, not the model."""
    texts = _texts(body)
    model = service.resolve(settings, body.model, body.dimensions)
    # No transaction: the lookup, the refresh of old hits and the write of new rows each stand alone.
    result = await service.embed(connection, clients, principal.org_id, model, texts)
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    if body.encoding_format == "base64":
        content = _base64_answer(result.vectors, model.name, usage)
    else:
        # Serialised here, in the documented shape (`EmbeddingResponse`, checked by the tests):
        # building and validating thousands of pydantic objects would cost more than the vectors.
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": e}
                for i, e in enumerate(result.vectors.tolist())
            ],
            "model": model.name,
            "usage": usage,
        }
        content = json.dumps(answer, separators=(",", ":")).encode()
    return Response(content, media_type="application/json")


def _base64_answer(vectors: Any, model: str, usage: dict[str, int]) -> bytes:
    """`EmbeddingResponse` as JSON, each vector base64-encoded straight from its float32 bytes: the
    pieces (digits, base64 letters) need no escaping, so no JSON encoder scans the megabytes, and
    they are joined once (each copy of a fresh megabyte costs its page faults)."""
    rows = np.ascontiguousarray(vectors, dtype=service.FLOAT32)
    tail = json.dumps({"model": model, "usage": usage}, separators=(",", ":")).encode()
    pieces = [
        b'{"object":"embedding","index":%d,"embedding":"%s"},' % (i, binascii.b2a_base64(row, newline=False))
        for i, row in enumerate(rows)
    ]
    pieces[-1] = pieces[-1][:-1]  # no comma after the last
    return b"".join((b'{"object":"list","data":[', *pieces, b"],", tail[1:]))


@router.get("/models", response_model=ModelList)
async def list_models(
    settings: SettingsDep, principal: Annotated[Principal, require("embeddings:embed")]
) -> ModelList:
    """The models `/v1/embeddings` and collections take (OpenAI's list shape, plus each model's size
    and whether `dimensions` may ask for fewer)."""
    return ModelList(
        data=[
            ModelRead(id=name, owned_by=spec.source, dimensions=spec.dimensions, shortenable=spec.shortenable)
            for name, spec in settings.catalog().items()
        ]
    )


# --- collections ---


@router.post(
    "/collections",
    response_model=CollectionRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_collection(
    body: CollectionCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("embeddings:write")],
) -> CollectionRead:
    """Create a collection: vectors of one model and size (one of the indexed sizes), with an HNSW
    cosine index. Emits `embeddings.collection.created`."""
    return CollectionRead.model_validate(await collections.create(session, settings, principal.org_id, body))


@router.get("/collections", response_model=Page[CollectionRead])
async def list_collections(
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:read")],
    params: PageDep,
) -> Page[CollectionRead]:
    """The organization's collections, by name."""
    rows = await paginate(session, scoped(Collection, principal.org_id), (Collection.name,), params)
    return rows.page(CollectionRead.model_validate)


@router.get("/collections/{name}", response_model=CollectionRead)
async def read_collection(
    name: CollectionName,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:read")],
) -> CollectionRead:
    return CollectionRead.model_validate(await collections.get(session, principal.org_id, name))


@router.delete("/collections/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_collection(
    name: CollectionName,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:write")],
) -> Response:
    """Delete a collection and every item in it. Emits `embeddings.collection.deleted`."""
    await collections.remove(session, principal.org_id, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/collections/{name}/items", response_model=UpsertRead, responses=problem_responses({502}))
async def upsert_items(
    name: CollectionName,
    body: ItemsUpsert,
    session: SessionDep,
    clients: ClientsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("embeddings:write")],
) -> UpsertRead:
    """Insert or replace up to 1000 items by id: each a `text` (embedded with the collection's model,
    through the cache) or an `embedding` of the collection's size, with its metadata."""
    return await collections.upsert(session, clients, settings, principal.org_id, name, body)


def _item_read(item: Item) -> ItemRead:
    return ItemRead(id=item.id, text=item.text, metadata=item.meta, updated_at=item.updated_at)


@router.get("/collections/{name}/items", response_model=Page[ItemRead])
async def list_items(
    name: CollectionName,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:read")],
    params: PageDep,
) -> Page[ItemRead]:
    """The collection's items, by id (without their vectors)."""
    # The page first, so that a bad cursor is a 400 whether or not the collection exists.
    query = (
        scoped(Item, principal.org_id)
        .join(Collection, Collection.id == Item.collection_id)
        .where(Collection.name == name)
    )
    rows = await paginate(session, query, (Item.id,), params)
    if not rows.items:
        await collections.get(session, principal.org_id, name)  # 404 for no such collection
    return rows.page(_item_read)


@router.get("/collections/{name}/items/{item_id}", response_model=ItemRead)
async def read_item(
    name: CollectionName,
    item_id: ItemIdPath,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:read")],
) -> ItemRead:
    return _item_read(await collections.get_item(session, principal.org_id, name, item_id))


@router.delete("/collections/{name}/items/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(
    name: CollectionName,
    item_id: ItemIdPath,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:write")],
) -> Response:
    item = await collections.get_item(session, principal.org_id, name, item_id)
    await session.delete(item)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/collections/{name}/items/delete", response_model=DeleteRead)
async def delete_items(
    name: CollectionName,
    body: ItemsDelete,
    session: SessionDep,
    principal: Annotated[Principal, require("embeddings:write")],
) -> DeleteRead:
    """Delete items by id, by metadata (`filter`: every item whose metadata has these values), or
    both (the items matching both); answers how many went."""
    return await collections.delete_items(session, principal.org_id, name, body)


@router.post("/collections/{name}/search", response_model=SearchRead, responses=problem_responses({502}))
async def search(
    name: CollectionName,
    body: Search,
    session: ReadSessionDep,
    clients: ClientsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("embeddings:read")],
) -> SearchRead:
    """The `k` items nearest to `query` (embedded with the collection's model) or to `embedding`, by
    cosine similarity, among those whose metadata matches `filter`; best first."""
    return await collections.search(session, clients, settings, principal.org_id, name, body)
