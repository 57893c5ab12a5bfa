"""The chunks' vectors, held in embeddings (over HTTP; knowledge never imports it): one embeddings
collection per knowledge collection, `knowledge-<id>`, each item a chunk (its id, text and where it
comes from as metadata). Calls carry knowledge's workload token: for the user of a request, or for
the organization alone in the indexing handler (`coder.shared.context.acting_org`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from coder.shared.errors import Problem
from coder.shared.http import ServiceClients

BATCH = 500  # items per upsert request (embeddings takes up to 1000)
LOCAL = "local"  # embeddings' `owned_by` of a model computed in-process


class VectorError(Exception):
    """embeddings could not do it. `permanent`: asking again will not help (a refusal, not an outage)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def collection_name(collection_id: uuid.UUID) -> str:
    return f"knowledge-{collection_id.hex}"


def _client(clients: ServiceClients) -> httpx.AsyncClient:
    return clients.client("embeddings", caller="knowledge")


async def _call(clients: ServiceClients, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = await _client(clients).request(method, path, **kwargs)
    except (httpx.HTTPError, KeyError) as exc:  # KeyError: no URL for embeddings in this process
        raise VectorError(f"embeddings is unreachable: {exc!r}", permanent=False) from None
    except Problem as exc:  # the gateway refused to trade the token
        raise VectorError(f"no workload token for embeddings: {exc.detail}", permanent=True) from None
    except RuntimeError as exc:  # no workload secret in this process's settings
        raise VectorError(str(exc), permanent=True) from None
    if response.status_code >= 500 or response.status_code == 429:
        raise VectorError(f"embeddings answered {response.status_code}", permanent=False)
    return response


def _refused(response: httpx.Response) -> VectorError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return VectorError(f"embeddings refused ({response.status_code}): {detail}", permanent=True)


async def model_source(clients: ServiceClients, model: str | None) -> tuple[str, str]:
    """(name, owned_by) of `model` (None: embeddings' default, the first it lists as default)."""
    response = await _call(clients, "GET", "/v1/models")
    if response.status_code != 200:
        raise _refused(response)
    models = response.json()["data"]
    for entry in models:
        if entry["id"] == model:
            return entry["id"], entry["owned_by"]
    if model is not None:
        raise VectorError(f"embeddings offers no model {model!r}", permanent=True)
    local = [m for m in models if m["owned_by"] == LOCAL]
    first = (local or models)[0]
    return first["id"], first["owned_by"]


async def ensure_collection(clients: ServiceClients, collection_id: uuid.UUID, model: str | None) -> None:
    body: dict[str, Any] = {"name": collection_name(collection_id), "description": "knowledge chunks"}
    if model is not None:
        body["model"] = model
    response = await _call(clients, "POST", "/v1/collections", json=body)
    if response.status_code not in (201, 409):
        raise _refused(response)


async def replace_document(
    clients: ServiceClients, collection_id: uuid.UUID, document_id: uuid.UUID, items: Sequence[dict[str, Any]]
) -> None:
    """The document's vectors become `items`: its earlier ones deleted first."""
    await delete_document(clients, collection_id, document_id)
    name = collection_name(collection_id)
    for start in range(0, len(items), BATCH):
        batch = list(items[start : start + BATCH])
        response = await _call(clients, "PUT", f"/v1/collections/{name}/items", json={"items": batch})
        if response.status_code != 200:
            raise _refused(response)


async def delete_document(clients: ServiceClients, collection_id: uuid.UUID, document_id: uuid.UUID) -> None:
    name = collection_name(collection_id)
    response = await _call(
        clients,
        "POST",
        f"/v1/collections/{name}/items/delete",
        json={"filter": {"document_id": str(document_id)}},
    )
    if response.status_code not in (200, 404):
        raise _refused(response)


async def drop_collection(clients: ServiceClients, collection_id: uuid.UUID) -> None:
    response = await _call(clients, "DELETE", f"/v1/collections/{collection_name(collection_id)}")
    if response.status_code not in (204, 404):
        raise _refused(response)


async def nearest(
    clients: ServiceClients, collection_id: uuid.UUID, query: str, k: int, where: dict[str, Any]
) -> list[str]:
    """Ids of the `k` chunks of the collection nearest to `query` (none if it has no vectors yet)."""
    body = {"query": query, "k": k, "filter": where}
    response = await _call(
        clients, "POST", f"/v1/collections/{collection_name(collection_id)}/search", json=body
    )
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        raise _refused(response)
    return [hit["id"] for hit in response.json()["data"]]
