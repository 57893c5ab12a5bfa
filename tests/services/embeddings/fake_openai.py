"""A stand-in for the ai service's OpenAI-compatible `POST /v1/embeddings`, speaking OpenAI's wire
format (request and answer bodies, errors), with deterministic vectors: what the provider path of
embeddings is tested against. It records every request it answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

NATIVE = 1536


def vector(text: str, dimensions: int = NATIVE) -> np.ndarray:
    """The fake model: a unit vector seeded by the text, shortened as OpenAI's text-embedding-3 does."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    full = np.random.default_rng(seed).standard_normal(NATIVE).astype(np.float32)
    short = full[:dimensions]
    return short / np.linalg.norm(short)


@dataclass
class FakeOpenAI:
    requests: list[dict[str, Any]] = field(default_factory=list)
    # When set, the next answers are this (status, OpenAI error body) instead.
    failure: tuple[int, dict[str, Any]] | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/embeddings", self._embeddings, methods=["POST"])])

    async def _embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self.failure is not None:
            return JSONResponse(self.failure[1], status_code=self.failure[0])
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        dimensions = body.get("dimensions", NATIVE)
        data = [
            {"object": "embedding", "index": i, "embedding": vector(t, dimensions).tolist()}
            for i, t in enumerate(texts)
        ]
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
