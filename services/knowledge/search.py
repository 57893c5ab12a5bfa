"""Hybrid search: PostgreSQL full text over the chunks (tsvector, GIN) and k-NN over their vectors in
embeddings, fused by reciprocal rank (RRF: score = sum of 1 / (60 + rank) over the two lists), then
read back from the chunks themselves, so a hit always cites what is indexed now, in a collection the
caller may read."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.knowledge import vectors
from coder.services.knowledge.models import TS_CONFIG, Chunk, Collection, Document
from coder.services.knowledge.schemas import Citation, SearchHit, SearchQuery, SearchRead
from coder.services.knowledge.service import Reader, readable
from coder.shared.repository import owned_by_sql, scoped

RRF_K = 60
MAX_TERMS = 32


def query_words(text: str) -> list[str]:
    """The query's words, lowercased, once each (at most MAX_TERMS). Only letters and digits reach
    the `to_tsquery` syntax."""
    return list(dict.fromkeys(w.lower() for w in re.findall(r"[^\W_]+", text)))[:MAX_TERMS]


def ts_query(words: list[str], joiner: str = " | ") -> str | None:
    """`words` OR-ed (or AND-ed with `joiner=" & "`) for `to_tsquery`."""
    return joiner.join(words) or None


def candidates(k: int) -> int:
    return min(100, max(4 * k, 20))


# At most this many chunks are ranked. A question of common words matches most of the corpus, and
# ts_rank_cd reads every row it scores (ranking all 78,000 matches of one cost 400 ms of 100,000),
# so the full text ranks the fewest chunks that still hold the best `n` (see `full_text`).
RANKED = 2000


# The org condition, spelled where every one is (shared/repository.py).
OWNED = owned_by_sql("org")


def _level(i: int) -> str:
    """Group `i` of the full text's chunks: those matching `terms<i>`, read only if group `i - 1` fell
    short of `n`; `held` is how many of the query's words a chunk holds (counted, or known as
    `held<i>` when the group's terms imply it)."""
    after_short = f"\n        AND (SELECT count(*) FROM level{i - 1}) < :n" if i else ""  # noqa: S608
    return f"""level{i} AS (
    SELECT id,
        CASE WHEN :counted{i} THEN (
            SELECT count(*) FROM unnest((SELECT each_word FROM parsed)) AS word (q) WHERE tsv @@ q
        ) ELSE :held{i} END AS held,
        ts_rank_cd(tsv, (SELECT any_word FROM parsed)) AS rank
    FROM knowledge_chunk
    WHERE {OWNED} AND collection_id = ANY(CAST(:collections AS uuid[]))
        AND (CAST(:sources AS uuid[]) IS NULL OR source_id = ANY(CAST(:sources AS uuid[])))
        AND tsv @@ (SELECT terms{i} FROM parsed){after_short}
    LIMIT :ranked
)"""  # noqa: S608  (only constants are interpolated)


LEVELS = ",\n".join(_level(i) for i in range(3))

# The full text's one statement, the same for every query (prepared once per connection): the query's
# tsqueries parsed once (`parsed`, read through InitPlans: a generic plan would otherwise parse
# bound terms again for every row), then three groups of chunks (`terms0..2`, see `full_text`),
# each read only if the narrower one fell short of `n`.
FULL_TEXT = sql(
    f"""
WITH parsed AS MATERIALIZED (
    SELECT to_tsquery(CAST(:config AS regconfig), :terms0) AS terms0,
        to_tsquery(CAST(:config AS regconfig), :terms1) AS terms1,
        to_tsquery(CAST(:config AS regconfig), :terms2) AS terms2,
        to_tsquery(CAST(:config AS regconfig), :any_word) AS any_word,
        ARRAY(SELECT to_tsquery(CAST(:config AS regconfig), w) FROM unnest(CAST(:words AS text[])) AS w)
            AS each_word
),
{LEVELS}
SELECT id FROM (
    SELECT id, max(held) AS held, rank
    FROM (SELECT * FROM level0 UNION ALL SELECT * FROM level1 UNION ALL SELECT * FROM level2) AS found
    GROUP BY id, rank
) AS pool
ORDER BY held DESC, rank DESC, id
LIMIT :n
"""  # noqa: S608  (only OWNED, a constant, is interpolated)
)


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
    """The `n` best chunks by full text: chunks holding more of the query's distinct words first,
    then by `ts_rank_cd` (the words more often, closer together), then by id.

    The chunks holding every word, all words but one and any word are nested groups, each ranked
    wholly above the rest of the next; so once a group holds `n` chunks, the best `n` are among
    them and the wider groups are not read. One statement (`FULL_TEXT`, the same for every query, so
    prepared once): each group is a GIN index scan that runs only if the narrower one fell short of
    `n` (a one-time filter), scoring its rows as it reads them. Exact unless the group that holds the
    best `n` has more than `RANKED` chunks (then its first `RANKED` are ranked); `exact` ranks every
    matching chunk (the reference the benchmark measures recall against)."""
    words = query_words(text)
    any_word = ts_query(words)
    if any_word is None:
        return []
    # (terms, how many words a chunk first met there holds, or None: counted word by word).
    if exact:
        groups: list[tuple[str, int | None]] = [(any_word, None)] * 3
    else:
        every = ts_query(words, " & ") or any_word
        but_one = " | ".join(f"({' & '.join(words[:i] + words[i + 1 :])})" for i in range(len(words)))
        # A query of one or two words has fewer groups: the wider ones repeat (a repeated group is
        # read only if it fell short already, and its chunks are the same).
        widest = (any_word, 1 if len(words) <= 3 else None)
        groups = [(every, len(words)), (but_one, len(words) - 1) if len(words) > 2 else widest, widest]
    parameters: dict[str, Any] = {
        "config": TS_CONFIG,
        "any_word": any_word,
        "words": words,
        "org": org_id,
        "collections": collections,
        "sources": sources or None,
        "ranked": None if exact else RANKED,
        "n": n,
    }
    for i, (terms, held) in enumerate(groups):
        parameters |= {f"terms{i}": terms, f"held{i}": held or 0, f"counted{i}": held is None}
    return list((await session.execute(FULL_TEXT, parameters)).scalars())


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
    # The two halves at once: full text in this session, the k-NN over HTTP in embeddings.
    text_half = asyncio.ensure_future(full_text(session, org_id, ids, body.sources, body.query, n))
    try:
        meaning = await nearest(reader, allowed, body.sources, body.query, n)
    except vectors.VectorError as exc:
        meaning, degraded = [], str(exc)
    except BaseException:
        text_half.cancel()
        raise
    words = await text_half
    fused = fuse(words, meaning)
    wanted = [c for c, _, _ in fused]
    # What a hit shows, not the chunks' full-text vectors nor their documents' whole content.
    statement = (
        scoped(Chunk, org_id)
        .with_only_columns(
            Chunk.id,
            Chunk.collection_id,
            Chunk.content,
            Chunk.revision,
            Chunk.heading,
            Chunk.start_line,
            Chunk.end_line,
            Document.id.label("document_id"),
            Document.source_id,
            Document.path,
            Document.title,
        )
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.id.in_(wanted), Chunk.collection_id.in_(ids))
    )
    if body.sources:
        statement = statement.where(Chunk.source_id.in_(body.sources))
    rows = {row.id: row for row in (await session.execute(statement)).all()}
    by_id = {c.id: c for c in allowed}
    hits: list[SearchHit] = []
    for chunk_id, score, (text_rank, vector_rank) in fused:
        row = rows.get(chunk_id)
        if row is None:
            continue  # a vector of a chunk replaced or deleted since
        collection = by_id[row.collection_id]
        hits.append(
            SearchHit(
                snippet=row.content,
                score=score,
                text_rank=text_rank,
                vector_rank=vector_rank,
                private=collection.private,
                citation=Citation(
                    collection_id=collection.id,
                    collection=collection.name,
                    document_id=row.document_id,
                    source_id=row.source_id,
                    path=row.path,
                    title=row.title,
                    revision=row.revision,
                    heading=row.heading,
                    start_line=row.start_line,
                    end_line=row.end_line,
                ),
            )
        )
        if len(hits) == body.k:
            break
    return SearchRead(data=hits, degraded=degraded)
