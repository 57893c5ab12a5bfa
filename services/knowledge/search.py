"""Hybrid search: PostgreSQL full text over the chunks (tsvector, GIN) and k-NN over their vectors in
embeddings, fused by reciprocal rank (RRF: score = sum of 1 / (60 + rank) over the two lists), then
read back from the chunks themselves, so a hit always cites what is indexed now, in a collection the
caller may read."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from sqlalchemy import func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.knowledge import vectors
from coder.services.knowledge.models import TS_CONFIG, Chunk, Collection, Document
from coder.services.knowledge.schemas import Citation, SearchHit, SearchQuery, SearchRead
from coder.services.knowledge.service import Reader, readable
from coder.shared.repository import scoped

RRF_K = 60
MAX_TERMS = 32


def query_words(text: str) -> list[str]:
    """The query's words, lowercased, once each (at most MAX_TERMS). Only letters and digits reach
    the `to_tsquery` syntax."""
    return list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]+", text)))[:MAX_TERMS]


def ts_query(text: str, joiner: str = " | ") -> str | None:
    """The words of `text` OR-ed (or AND-ed with `joiner=" & "`) for `to_tsquery`."""
    return joiner.join(query_words(text)) or None


def candidates(k: int) -> int:
    return min(100, max(4 * k, 20))


# At most this many chunks matching every word, and this many matching any, are ranked (read from
# the GIN index, before any ranking). A question of common words matches most of the corpus, and
# ts_rank_cd reads every row it scores: ranking them all cost 400 ms over 100,000 chunks.
RANKED = 500


async def full_text(
    session: AsyncSession,
    org_id: str,
    collections: list[uuid.UUID],
    sources: list[uuid.UUID],
    text: str,
    n: int,
    *,
    exact: bool = False,
) -> list[uuid.UUID]:
    """The `n` best chunks by full text: those holding every word of the query first, then those
    holding any; each group by `ts_rank_cd` (chunks with more of the words, more often, first).
    Only the first `RANKED` of each group the index yields are ranked, unless `exact` (which ranks
    every matching chunk: the reference the benchmark measures recall against)."""
    any_terms, all_terms = ts_query(text), ts_query(text, " & ")
    if any_terms is None or all_terms is None:
        return []
    query_any = func.to_tsquery(TS_CONFIG, any_terms)
    query_all = func.to_tsquery(TS_CONFIG, all_terms)

    def matching(query: Any) -> Any:
        statement = (
            scoped(Chunk, org_id)
            .with_only_columns(Chunk.id)
            .where(Chunk.collection_id.in_(collections), Chunk.tsv.bool_op("@@")(query))
        )
        if sources:
            statement = statement.where(Chunk.source_id.in_(sources))
        return statement if exact else statement.limit(RANKED)

    pool = union(matching(query_all), matching(query_any)).subquery()
    every = Chunk.tsv.bool_op("@@")(query_all).label("every")
    rank = func.ts_rank_cd(Chunk.tsv, query_any).label("rank")
    statement = (
        select(Chunk.id, every, rank)
        .where(Chunk.id.in_(select(pool.c.id)))
        .order_by(every.desc(), rank.desc(), Chunk.id)
        .limit(n)
    )
    return [row.id for row in (await session.execute(statement)).all()]


async def nearest(
    reader: Reader, collections: list[Collection], sources: list[uuid.UUID], text: str, n: int
) -> list[uuid.UUID]:
    """Chunk ids nearest in meaning, over the collections (one embeddings search each), best first."""
    calls = []
    for collection in collections:
        where: list[dict[str, Any]] = [{}]
        if sources:
            where = [{"source_id": str(s)} for s in sources]
        calls += [vectors.nearest(reader.clients, collection.id, text, n, w) for w in where]
    found = await asyncio.gather(*calls)
    # Each list is best-first; merged round-robin (scores from different models do not compare).
    merged: list[uuid.UUID] = []
    for position in range(n):
        for ids in found:
            if position < len(ids):
                merged.append(uuid.UUID(ids[position]))
    return merged[:n]


def fuse(*ranked: list[uuid.UUID]) -> list[tuple[uuid.UUID, float, list[int | None]]]:
    scores: dict[uuid.UUID, float] = {}
    ranks: dict[uuid.UUID, list[int | None]] = {}
    for which, ids in enumerate(ranked):
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            ranks.setdefault(chunk_id, [None] * len(ranked))[which] = rank
    order = sorted(scores, key=lambda c: (-scores[c], str(c)))
    return [(c, scores[c], ranks[c]) for c in order]


async def search(session: AsyncSession, reader: Reader, body: SearchQuery) -> SearchRead:
    org_id = reader.principal.org_id
    query = scoped(Collection, org_id).order_by(Collection.name)
    if body.collections:
        query = query.where(Collection.id.in_(body.collections))
    if body.teams:
        query = query.where(Collection.teams.overlap(body.teams))
    allowed = await readable(session, reader, (await session.execute(query)).scalars().all())
    if not allowed:
        return SearchRead(data=[])
    ids = [c.id for c in allowed]
    n = candidates(body.k)
    degraded = None
    words = await full_text(session, org_id, ids, body.sources, body.query, n)
    try:
        meaning = await nearest(reader, allowed, body.sources, body.query, n)
    except vectors.VectorError as exc:
        meaning, degraded = [], str(exc)
    fused = fuse(words, meaning)
    wanted = [c for c, _, _ in fused]
    statement = (
        scoped(Chunk, org_id)
        .add_columns(Document)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_(wanted), Chunk.collection_id.in_(ids))
    )
    if body.sources:
        statement = statement.where(Chunk.source_id.in_(body.sources))
    rows = {chunk.id: (chunk, document) for chunk, document in (await session.execute(statement)).all()}
    by_id = {c.id: c for c in allowed}
    hits: list[SearchHit] = []
    for chunk_id, score, (text_rank, vector_rank) in fused:
        found = rows.get(chunk_id)
        if found is None:
            continue  # a vector of a chunk replaced or deleted since
        chunk, document = found
        collection = by_id[chunk.collection_id]
        hits.append(
            SearchHit(
                snippet=chunk.content,
                score=score,
                text_rank=text_rank,
                vector_rank=vector_rank,
                private=collection.private,
                citation=Citation(
                    collection_id=collection.id,
                    collection=collection.name,
                    document_id=document.id,
                    source_id=document.source_id,
                    path=document.path,
                    title=document.title,
                    revision=chunk.revision,
                    heading=chunk.heading,
                    start_line=chunk.start_line,
                    end_line=chunk.end_line,
                ),
            )
        )
        if len(hits) == body.k:
            break
    return SearchRead(data=hits, degraded=degraded)
