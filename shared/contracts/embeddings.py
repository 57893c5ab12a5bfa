"""Events the embeddings target publishes."""

from __future__ import annotations

from typing import ClassVar

from coder.shared.contracts import Contract


class CollectionCreated(Contract):
    """A collection of vectors was created: `id` and `name` address it, its vectors have `dimensions`
    numbers from `model`."""

    event_type: ClassVar[str] = "embeddings.collection.created"
    schema_version: ClassVar[int] = 1

    id: str
    name: str
    model: str
    dimensions: int


class CollectionDeleted(Contract):
    """A collection and every item in it were deleted."""

    event_type: ClassVar[str] = "embeddings.collection.deleted"
    schema_version: ClassVar[int] = 1

    id: str
    name: str
