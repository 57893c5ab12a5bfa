"""Small builders for knowledge tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from coder.tests.support.platform import wait_until

API = "/api/knowledge/v1"


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def collection(client: httpx.AsyncClient, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"c-{uuid.uuid4().hex[:8]}", **fields}
    created: dict[str, Any] = await ok(await client.post(f"{API}/collections", json=body, headers=h), 201)
    return created


async def document(
    client: httpx.AsyncClient, h: dict[str, str], collection_id: str, title: str, content: str
) -> dict[str, Any]:
    body = {"title": title, "content": content}
    created: dict[str, Any] = await ok(
        await client.post(f"{API}/collections/{collection_id}/documents", json=body, headers=h), 201
    )
    return created


async def indexed(
    client: httpx.AsyncClient, h: dict[str, str], document_id: str, revision: int
) -> dict[str, Any]:
    """The document once its index holds `revision` (indexed or failed)."""

    async def done() -> dict[str, Any] | None:
        read: dict[str, Any] = await ok(await client.get(f"{API}/documents/{document_id}", headers=h))
        index = read["index"]
        return read if index["revision"] == revision and index["status"] in ("indexed", "failed") else None

    found: dict[str, Any] = await wait_until(done, what=f"document {document_id} indexed at {revision}")
    return found


async def search(client: httpx.AsyncClient, h: dict[str, str], query: str, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await ok(
        await client.post(f"{API}/search", json={"query": query, **body}, headers=h)
    )
    return answer
