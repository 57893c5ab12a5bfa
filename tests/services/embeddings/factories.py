"""Small builders for embeddings tests."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np

from coder.tests.support.platform import Platform

API = "/api/embeddings/v1"
ALL = ["embeddings:embed", "embeddings:read", "embeddings:write"]


def decode(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


async def embed(p: Platform, h: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = await p.client.post(f"{API}/embeddings", json=body, headers=h)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def create_collection(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"c-{uuid.uuid4().hex[:8]}", **fields}
    response = await p.client.post(f"{API}/collections", json=body, headers=h)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def upsert(p: Platform, h: dict[str, str], name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = await p.client.put(f"{API}/collections/{name}/items", json={"items": items}, headers=h)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def search(p: Platform, h: dict[str, str], name: str, **body: Any) -> list[dict[str, Any]]:
    response = await p.client.post(f"{API}/collections/{name}/search", json=body, headers=h)
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["data"]
    return hits
