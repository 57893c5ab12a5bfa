"""The local embedding model through the API (`POST /api/embeddings/v1/embeddings`: gateway dispatch,
token check, validation, the content-hash cache lookup and write, base64 answers as the openai SDK
asks) against calling the library directly (`wordllama`'s own `embed`, normalised), in texts per
second, in the same run. Every text is new to the cache, so the model runs for each: the API's
cost is measured on its slowest path."""

from __future__ import annotations

import base64
import uuid

import httpx
import numpy as np

from coder.bench.support import Stopwatch, report, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.services.embeddings import local
from coder.shared import db, migrations
from coder.shared.settings import PlatformSettings
from coder.tests.support.tokens import TestSigner

REQUESTS = 20
BATCH = 1000  # texts per request, as an indexer sends them

WORDS = [
    *[
        "the",
        "platform",
        "indexes",
        "documents",
        "code",
        "notes",
        "and",
        "answers",
        "questions",
        "about",
        "them",
        "with",
        "vectors",
    ],
    *[
        "computed",
        "from",
        "every",
        "chunk",
        "of",
        "text",
        "in",
        "a",
        "repository",
        "or",
        "a",
        "folder",
        "of",
        "markdown",
        "files",
    ],
]


def texts(seed: str, n: int) -> list[str]:
    """Sentences of 8 to 24 words, each ending in a unique token (so no two are cached alike)."""
    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 25)))) + f" {seed}-{i}" for i in range(n)]


def direct(batch: list[str]) -> float:
    """Seconds the library takes for one batch."""
    library = local.model._load()
    clock = Stopwatch()
    vectors = library.embed(batch, norm=True)
    assert vectors.shape == (BATCH, local.DIMENSIONS)
    return clock.seconds


async def side_by_side(database_url: str) -> tuple[float, float]:
    """Texts per second of the library and of the API, one batch each in turn (so both see the
    same machine load), each batch new to both."""
    signer = TestSigner()
    settings = PlatformSettings.model_validate(
        {"database_url": database_url, "jwks": signer.jwks(), "environment": "test"}
    )
    targets = registry.resolve("all")
    app = build_process_app(settings, targets, [t.settings() for t in targets.values() if t.settings])
    headers = signer.headers(f"bench-{uuid.uuid4().hex[:8]}", perms=["embeddings:embed"])
    library_seconds = api_seconds = 0.0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def api(batch: list[str]) -> float:
                clock = Stopwatch()
                response = await client.post(
                    "/api/embeddings/v1/embeddings",
                    json={"input": batch, "model": local.NAME, "encoding_format": "base64"},
                    headers=headers,
                )
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                vectors = np.frombuffer(b"".join(base64.b64decode(d["embedding"]) for d in data), "<f4")
                seconds = clock.seconds
                assert vectors.size == len(batch) * local.DIMENSIONS
                return seconds

            # Warm, as the library is in `main`: the process's first request builds the app's routes
            # and imports what they use lazily (seconds, once per process; not the API's steady cost).
            await api(texts("warmup", BATCH))
            for round in range(REQUESTS):
                library_seconds += direct(texts(f"direct{round}", BATCH))
                api_seconds += await api(texts(f"api{round}", BATCH))
    total = REQUESTS * BATCH
    return total / library_seconds, total / api_seconds


async def main() -> None:
    local.model._load()  # both sides measured warm: the weights load once per process
    direct(texts("warmup", BATCH))
    async with scratch_database() as database_url:
        engine = db.create_engine(database_url, pool_size=1)
        await migrations.upgrade(engine, list(registry.resolve("all").values()))
        await engine.dispose()
        library, api = await side_by_side(database_url)
    report(
        f"local embeddings ({local.NAME}), {REQUESTS} requests of {BATCH} new texts",
        [
            ("wordllama embed(), in process", library, "texts/s"),
            ("POST /api/embeddings/v1/embeddings", api, "texts/s"),
        ],
        baseline="wordllama embed(), in process",
    )
    from coder.bench.support import result

    result("ratio_vs_library", api / library, goal=0.8)
