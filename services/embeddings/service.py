"""Embedding texts: the model registry, the content-hash cache, the local model and the ai service."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, LargeBinary, any_, func, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from coder.services.embeddings import local
from coder.services.embeddings.config import EmbeddingsSettings, ModelSpec
from coder.services.embeddings.models import CacheEntry
from coder.shared.errors import InvalidField, Problem
from coder.shared.http import ServiceClients
from coder.shared.repository import owned_by, scoped
from coder.shared.runtime import Runtime

FLOAT32 = np.dtype("<f4")
DIGEST = 32  # bytes of a SHA-256
# One statement, its rows cut out of two blobs (the digests, 32 bytes each, and the
# vectors, `:width` bytes each): the driver sends two byte strings instead of encoding an array of
# a thousand, and no Python object is made per row.
CACHE_INSERT = text(
    "INSERT INTO embeddings_cache (org_id, model, dimensions, sha256, embedding, tokens) "
    "SELECT CAST(:org_id AS varchar), CAST(:model AS varchar), CAST(:dimensions AS smallint), "
    "substring(CAST(:digests AS bytea) FROM i * 32 + 1 FOR 32), "
    "substring(CAST(:vectors AS bytea) FROM i * CAST(:width AS integer) + 1 FOR CAST(:width AS integer)), t "
    "FROM unnest(CAST(:tokens AS integer[])) WITH ORDINALITY AS u(t, n), CAST(n - 1 AS integer) AS i "
    "ON CONFLICT DO NOTHING"
)


# A cache hit refreshes its row's `last_used_at` when older than this: eviction needs no finer
# clock, and most hits then cost no write.
TOUCH_AFTER = timedelta(hours=1)
CACHE_PRUNE_AGE = text(
    "DELETE FROM embeddings_cache WHERE last_used_at < now() - make_interval(days => :days)"
)
# Beyond the row limit, the least recently used rows go (in slices, so no one statement holds
# locks on millions of rows).
CACHE_PRUNE_ROWS = text(
    "DELETE FROM embeddings_cache WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM embeddings_cache ORDER BY last_used_at DESC OFFSET :keep LIMIT :slice))"
)
PRUNE_SLICE = 50_000

log = logging.getLogger(__name__)


class ProviderFailed(Problem):
    status, slug, title = 502, "bad-gateway", "The model provider failed"


@dataclass(frozen=True)
class Model:
    """A model as one request uses it: its name, what it is, and the size asked for."""

    name: str
    spec: ModelSpec
    dimensions: int


@dataclass(frozen=True)
class Embeddings:
    vectors: npt.NDArray[np.float32]  # (texts, dimensions), unit rows
    tokens: int  # of every text, cached or not: what the request used
    computed: int  # texts the model ran on (not found in the cache)


def resolve(
    settings: EmbeddingsSettings, name: str | None, dimensions: int | None, *, at: str = "body"
) -> Model:
    """The model `name` (default: the default model) at `dimensions` (default: its own), or a 422
    naming `<at>.model` or `<at>.dimensions`."""
    name = name or settings.default_model
    spec = settings.catalog().get(name)
    if spec is None:
        raise InvalidField(f"{at}.model", f"no model {name!r}; GET /v1/models lists them")
    if dimensions is None or dimensions == spec.dimensions:
        return Model(name, spec, spec.dimensions)
    if not spec.shortenable:
        raise InvalidField(
            f"{at}.dimensions", f"{name} has {spec.dimensions} dimensions and cannot be shortened"
        )
    if dimensions > spec.dimensions:
        raise InvalidField(f"{at}.dimensions", f"{name} has at most {spec.dimensions} dimensions")
    return Model(name, spec, dimensions)


async def embed(
    session: AsyncSession | AsyncConnection,
    clients: ServiceClients,
    org_id: str,
    model: Model,
    texts: list[str],
) -> Embeddings:
    """The texts' vectors: from the cache where the org embedded the same text with the same model
    and size before, else computed (each distinct text once) and cached."""
    hashes = [hashlib.sha256(t.encode()).digest() for t in texts]
    # Each distinct text's row in `table`, and the text that first has it.
    row: dict[bytes, int] = {}
    first: list[int] = []
    for i, digest in enumerate(hashes):
        if digest not in row:
            row[digest] = len(first)
            first.append(i)
    distinct = list(row)
    cached = await session.execute(
        scoped(CacheEntry, org_id)
        .with_only_columns(
            CacheEntry.sha256,
            CacheEntry.embedding,
            CacheEntry.tokens,
            CacheEntry.last_used_at < func.now() - TOUCH_AFTER,
        )
        .where(
            CacheEntry.model == model.name,
            CacheEntry.dimensions == model.dimensions,
            CacheEntry.sha256 == any_(_digest_array(distinct)),
        )
    )
    # The vectors and token counts of the distinct texts, filled from the cache then the model; the
    # answer is one gather of their rows.
    table = np.empty((len(distinct), model.dimensions), dtype=np.float32)
    counts = np.zeros(len(distinct), dtype=np.int64)
    known = np.zeros(len(distinct), dtype=bool)
    stale: list[bytes] = []
    for digest, vector, count, old in cached:
        at = row[digest]
        table[at] = np.frombuffer(vector, dtype=FLOAT32)
        counts[at] = count
        known[at] = True
        if old:
            stale.append(digest)
    if stale:
        await session.execute(
            update(CacheEntry)
            .where(
                owned_by(CacheEntry, org_id),
                CacheEntry.model == model.name,
                CacheEntry.dimensions == model.dimensions,
                CacheEntry.sha256 == any_(_digest_array(stale)),
            )
            .values(last_used_at=func.now())
        )
    missing = np.flatnonzero(~known)
    # The model on every missing text at once, then their rows in one statement: on a busy machine
    # a write overlapping the model (the database and the tokenizer's threads sharing the cores, the
    # event loop sending megabytes while the model thread waits for the GIL) slowed the model more
    # than the write cost (bench/bench_embeddings.py).
    if missing.size:
        vectors, tokens = await compute(clients, model, [texts[first[r]] for r in missing])
        table[missing] = vectors
        counts[missing] = tokens
        await _cache(session, org_id, model, [distinct[r] for r in missing], vectors, tokens)
    at_rows = np.fromiter((row[digest] for digest in hashes), dtype=np.intp, count=len(hashes))
    out = table[at_rows]
    total = int(counts[at_rows].sum())
    return Embeddings(out, total, len(missing))


def _digest_array(digests: list[bytes]) -> ColumnElement[Any]:
    """The digests as a `bytea[]` the database cuts out of one byte string (32 bytes each), as
    `CACHE_INSERT` does: the driver sends one value, not an array of a thousand to encode one by one."""
    start = func.generate_series(1, len(digests) * DIGEST, DIGEST).column_valued("start")
    packed = literal(b"".join(digests), LargeBinary)
    return func.array(select(func.substring(packed, start, DIGEST)).scalar_subquery())


async def _cache(
    session: AsyncSession | AsyncConnection,
    org_id: str,
    model: Model,
    digests: list[bytes],
    vectors: npt.NDArray[np.float32],
    tokens: list[int],
) -> None:
    # A concurrent request may have cached the same text meanwhile: the same vector, either row will do.
    await session.execute(
        CACHE_INSERT,
        {
            "org_id": org_id,
            "model": model.name,
            "dimensions": model.dimensions,
            "digests": b"".join(digests),
            "vectors": np.ascontiguousarray(vectors, dtype=FLOAT32).tobytes(),
            "width": model.dimensions * FLOAT32.itemsize,
            "tokens": tokens,
        },
    )


async def compute(
    clients: ServiceClients, model: Model, texts: list[str]
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """The texts' vectors and token counts from the model itself (no cache)."""
    if model.spec.group is None:
        result = await local.model.embed(texts)
        vectors, tokens = result.vectors, result.tokens
    else:
        vectors, tokens = await _provider(clients, model, model.spec.group, texts)
    if vectors.shape[1] != model.dimensions:
        vectors = local.normalise(np.ascontiguousarray(vectors[:, : model.dimensions]))
    return vectors, tokens


async def _provider(
    clients: ServiceClients, model: Model, group: str, texts: list[str]
) -> tuple[npt.NDArray[np.float32], list[int]]:
    """The texts through ai's OpenAI-compatible `/v1/embeddings`, as the user (their own token: ai
    checks their permission and meters the spend to them)."""
    body: dict[str, Any] = {"model": group, "input": texts, "encoding_format": "float"}
    if model.dimensions != model.spec.dimensions:
        body["dimensions"] = model.dimensions
    try:
        response = await clients.client("ai").post("/v1/embeddings", json=body)
    except (httpx.HTTPError, KeyError) as exc:  # KeyError: no ai target known to this process
        raise ProviderFailed(f"the ai service is out of reach ({type(exc).__name__})") from None
    if 400 <= response.status_code < 500:
        # The caller's own refusal (their permission, budget, input): theirs to see, same status.
        try:
            detail = str(response.json().get("detail") or response.json().get("error", {}).get("message"))
        except (ValueError, AttributeError):
            detail = response.text[:500]
        raise Problem(
            f"ai refused the request: {detail}", status=response.status_code, slug="provider-refused"
        )
    if response.status_code != 200:
        raise ProviderFailed(f"ai answered {response.status_code}")
    try:
        answer = response.json()
        data = sorted(answer["data"], key=lambda d: d["index"])
        vectors = np.array([d["embedding"] for d in data], dtype=np.float32)
        prompt_tokens = int(answer.get("usage", {}).get("prompt_tokens", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise ProviderFailed(f"ai answered a body that is not OpenAI's ({type(exc).__name__})") from None
    if vectors.ndim != 2 or len(vectors) != len(texts) or vectors.shape[1] < model.dimensions:
        raise ProviderFailed(
            f"ai answered {vectors.shape} vectors for {len(texts)} texts of {model.dimensions}"
        )
    if not np.isfinite(vectors).all():
        raise ProviderFailed("ai answered non-finite numbers")
    # The provider counts tokens per request; spread them over the texts by length for the cache.
    lengths = np.array([max(len(t), 1) for t in texts], dtype=np.float64)
    shares = np.floor(prompt_tokens * lengths / lengths.sum()).astype(int)
    shares[0] += prompt_tokens - int(shares.sum())
    return local.normalise(vectors), [int(s) for s in shares]


async def prune_cache(session: AsyncSession, settings: EmbeddingsSettings) -> int:
    """Bound the cache: drop rows unused for `cache_max_age_days`, then the least recently used
    beyond `cache_max_rows`. Answers how many rows went."""
    result = await session.execute(CACHE_PRUNE_AGE, {"days": settings.cache_max_age_days})
    deleted = int(result.rowcount)  # type: ignore[attr-defined]
    while True:
        result = await session.execute(
            CACHE_PRUNE_ROWS, {"keep": settings.cache_max_rows, "slice": PRUNE_SLICE}
        )
        deleted += int(result.rowcount)  # type: ignore[attr-defined]
        if result.rowcount < PRUNE_SLICE:  # type: ignore[attr-defined]
            return deleted


async def prune_loop(runtime: Runtime) -> None:
    """`prune_cache` every `cache_prune_seconds`, for the life of the process (a background task)."""
    settings = runtime.config(EmbeddingsSettings)
    while True:
        await asyncio.sleep(settings.cache_prune_seconds)
        try:
            async with runtime.sessions() as session, session.begin():
                deleted = await prune_cache(session, settings)
            if deleted:
                log.info("embedding cache pruned", extra={"deleted": deleted})
        except Exception as exc:  # the next round tries again
            log.warning("embedding cache not pruned", extra={"error": repr(exc)})
