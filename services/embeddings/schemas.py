from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coder.shared.schemas import Input

# OpenAI's own limits: 2048 inputs a request, 8192 tokens an input (about 4 characters each).
MAX_INPUTS = 2048
MAX_INPUT_CHARS = 32_768
MAX_REQUEST_CHARS = 1_000_000
MAX_ITEMS = 1000  # per upsert or delete request
MAX_K = 100
MAX_DIMENSIONS = 4096

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="Lowercase letters, digits, '.', '_' and '-'; unique in the organization",
    ),
]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]
ItemId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^/]+$")]
Text = Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARS)]
Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_DIMENSIONS)]
# Equality on top-level metadata keys (JSON containment): {"source": "docs", "lang": "en"}.
MetadataFilter = Annotated[
    dict[str, Any],
    Field(max_length=32, description="Items whose metadata has each of these keys with this value"),
]
Metadata = Annotated[dict[str, Any], Field(max_length=64)]


# --- OpenAI-compatible embeddings ---


class EmbeddingRequest(Input):
    """OpenAI's `POST /v1/embeddings` body."""

    # Token arrays are OpenAI's too; this API takes text only (refused with a 422 naming `input`).
    input: Annotated[
        str | list[str] | list[int] | list[list[int]],
        Field(
            description=f"A text or up to {MAX_INPUTS} texts, each non-empty and at most "
            f"{MAX_INPUT_CHARS} characters, {MAX_REQUEST_CHARS} in all"
        ),
    ]
    model: ModelName | None = Field(
        default=None, description="One of `GET /v1/models`; default the local model"
    )
    dimensions: int | None = Field(
        default=None, ge=1, le=MAX_DIMENSIONS, description="Fewer dimensions, where the model allows it"
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="`base64`: each vector as little-endian float32 bytes, base64-encoded"
    )
    user: str | None = Field(default=None, max_length=256, description="Accepted for compatibility; unused")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelRead(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    dimensions: int
    shortenable: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelRead]


# --- collections ---


class CollectionCreate(Input):
    name: Name
    model: ModelName | None = Field(default=None, description="Default: the default model")
    dimensions: int | None = Field(
        default=None, ge=1, le=MAX_DIMENSIONS, description="Default: the model's own size"
    )
    description: str = Field(default="", max_length=1000)


class CollectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    model: str
    dimensions: int
    created_at: datetime


class ItemIn(Input):
    id: ItemId
    text: Text | None = Field(default=None, description="Embedded with the collection's model (cached)")
    embedding: Vector | None = Field(
        default=None, description="A vector of the collection's size, instead of `text`"
    )
    metadata: Metadata = Field(default_factory=dict)


class ItemsUpsert(Input):
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=MAX_ITEMS)]


class UpsertRead(BaseModel):
    upserted: int
    embedded: int = Field(description="Texts the model ran on; the others came from the cache or as vectors")


class ItemsDelete(Input):
    ids: Annotated[list[ItemId], Field(max_length=MAX_ITEMS)] | None = None
    filter: MetadataFilter | None = Field(default=None, description="Delete every item matching it")


class DeleteRead(BaseModel):
    deleted: int


class ItemRead(BaseModel):
    id: str
    text: str | None
    metadata: dict[str, Any]
    updated_at: datetime


class Search(Input):
    query: Text | None = Field(default=None, description="Text to embed with the collection's model")
    embedding: Vector | None = Field(default=None, description="A vector of the collection's size instead")
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many nearest items")
    filter: MetadataFilter = Field(default_factory=dict)


class Hit(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity, 1 for the same direction")
    text: str | None
    metadata: dict[str, Any]


class SearchRead(BaseModel):
    data: list[Hit]
    model: str
    usage: Usage
