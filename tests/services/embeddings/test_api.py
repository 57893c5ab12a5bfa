"""embeddings through the gateway path `/api/embeddings`: the OpenAI-compatible API, the cache,
collections and search, on both backends."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from coder.services.embeddings import collections, local, service
from coder.services.embeddings.config import EmbeddingsSettings
from coder.services.embeddings.schemas import EmbeddingResponse
from coder.tests.services.embeddings.factories import (
    ALL,
    API,
    create_collection,
    decode,
    embed,
    search,
    upsert,
)
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner

TEXTS = [
    "PostgreSQL stores rows in tables",
    "The cat sat on the mat",
    "Vector search finds the nearest neighbours by cosine similarity",
]


def unique(text: str) -> str:
    """A text no earlier test embedded: the cache would otherwise answer it."""
    return f"{text} {uuid.uuid4().hex}"


async def test_embeddings_float_and_base64_agree(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=ALL)
    texts = [unique(t) for t in TEXTS]
    floats = await embed(platform, h, {"input": texts, "model": local.NAME})
    EmbeddingResponse.model_validate(floats, strict=True)  # the documented shape, serialised by hand
    assert floats["object"] == "list" and floats["model"] == local.NAME
    assert [d["index"] for d in floats["data"]] == [0, 1, 2]
    vectors = np.array([d["embedding"] for d in floats["data"]], dtype=np.float32)
    assert vectors.shape == (3, 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 3

    b64 = await embed(platform, h, {"input": texts, "encoding_format": "base64"})
    EmbeddingResponse.model_validate(b64, strict=True)
    assert np.array_equal(np.stack([decode(d["embedding"]) for d in b64["data"]]), vectors)
    assert b64["usage"] == floats["usage"]

    # The vectors are the library's own, whatever batch the text came in.
    single = await embed(platform, h, {"input": texts[1]})
    assert np.allclose(single["data"][0]["embedding"], vectors[1], atol=1e-6)
    plain = np.array([d["embedding"] for d in (await embed(platform, h, {"input": TEXTS}))["data"]])
    related = plain @ plain.T
    assert related[0, 2] > related[0, 1]  # databases are nearer to vector search than to cats


async def test_dimensions_truncate_and_renormalise(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=ALL)
    text = unique("matryoshka")
    full = np.array((await embed(platform, h, {"input": text}))["data"][0]["embedding"])
    short = np.array((await embed(platform, h, {"input": text, "dimensions": 64}))["data"][0]["embedding"])
    assert short.shape == (64,)
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


async def test_the_cache_keeps_the_model_from_running_twice(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, perms=ALL)
    texts = [unique(t) for t in TEXTS]
    before = local.model.texts_embedded
    first = await embed(platform, h, {"input": [*texts, texts[0]]})
    assert local.model.texts_embedded - before == 3  # the repeated text once

    before = local.model.texts_embedded
    again = await embed(platform, h, {"input": list(reversed(texts))})
    assert local.model.texts_embedded == before
    assert [d["embedding"] for d in again["data"]] == [d["embedding"] for d in reversed(first["data"][:3])]
    # Usage counts every input, cached or not, with the tokens counted when it was embedded.
    repeated = (await embed(platform, h, {"input": texts[0]}))["usage"]["prompt_tokens"]
    assert again["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"] - repeated

    # Another size, and another org, are other entries.
    await embed(platform, h, {"input": texts[0], "dimensions": 128})
    await embed(platform, signer.headers(f"org-{uuid.uuid4().hex[:12]}", perms=ALL), {"input": texts[0]})
    assert local.model.texts_embedded - before == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": [1, 2, 3]}, "body.input"),
        ({"input": [[1, 2], [3]]}, "body.input"),
        ({"input": []}, "body.input"),
        ({"input": ""}, "body.input"),
        ({"input": ["fine", ""]}, "body.input.1"),
        ({"input": ["fine", "fine", "x\x00"]}, "body.input.2"),
        ({"input": ["x"] * 2049}, "body.input"),
        ({"input": "x" * 32_769}, "body.input"),
        ({"input": ["fine", "x" * 32_769]}, "body.input.1"),
        ({"input": ["x" * 32_000] * 40}, "body.input"),
        ({"input": "x", "model": "gpt-nothing"}, "body.model"),
        ({"input": "x", "dimensions": 257}, "body.dimensions"),
        ({"input": "x", "dimensions": 0}, "body.dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "body.encoding_format"),
    ],
)
async def test_refusals_name_the_field(
    platform: Platform, signer: TestSigner, org: str, body: dict, field: str
) -> None:
    response = await platform.client.post(
        f"{API}/embeddings", json=body, headers=signer.headers(org, perms=ALL)
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]], response.json()


async def test_models(platform: Platform, signer: TestSigner, org: str) -> None:
    response = await platform.client.get(
        f"{API}/models", headers=signer.headers(org, perms=["embeddings:embed"])
    )
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    assert models[local.NAME]["dimensions"] == 256 and models[local.NAME]["owned_by"] == "local"
    refused = await platform.client.get(
        f"{API}/models", headers=signer.headers(org, perms=["embeddings:read"])
    )
    assert refused.status_code == 403


async def test_collection_search_filter_and_delete(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=ALL)
    events = await listen(platform, "embeddings.collection.*")
    collection = await create_collection(platform, h, description="notes")
    name = collection["name"]
    assert (collection["model"], collection["dimensions"]) == (local.NAME, 256)
    items = [
        {"id": "db", "text": TEXTS[0], "metadata": {"lang": "en", "kind": "doc"}},
        {"id": "cat", "text": TEXTS[1], "metadata": {"lang": "en", "kind": "story"}},
        {"id": "vec", "text": TEXTS[2], "metadata": {"lang": "en", "kind": "doc"}},
        {"id": "chat", "text": "Le chat est sur le tapis", "metadata": {"lang": "fr", "kind": "story"}},
    ]
    assert (await upsert(platform, h, name, items))["upserted"] == 4

    hits = await search(platform, h, name, query="nearest neighbour search in a database", k=2)
    assert [hit["id"] for hit in hits][:1] in (["vec"], ["db"])
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    assert hits[0]["text"] in (TEXTS[0], TEXTS[2])

    stories = await search(platform, h, name, query="a cat on a mat", k=10, filter={"kind": "story"})
    assert [hit["id"] for hit in stories] == ["cat", "chat"]
    assert stories[0]["score"] == pytest.approx(1.0, abs=0.2)
    french = await search(platform, h, name, query="a cat", filter={"kind": "story", "lang": "fr"})
    assert [hit["id"] for hit in french] == ["chat"]

    # Upserting an id replaces its text, vector and metadata.
    await upsert(
        platform, h, name, [{"id": "cat", "text": "Dogs bark at night", "metadata": {"kind": "other"}}]
    )
    stories = await search(platform, h, name, query="a cat on a mat", filter={"kind": "story"})
    assert [hit["id"] for hit in stories] == ["chat"]

    # A given vector instead of text: the item's own vector finds it first with score 1.
    vector = np.zeros(256, dtype=np.float32)
    vector[:3] = [0.5, -0.25, 1.0]
    await upsert(platform, h, name, [{"id": "raw", "embedding": vector.tolist(), "metadata": {}}])
    nearest = await search(platform, h, name, embedding=vector.tolist(), k=1)
    assert nearest[0]["id"] == "raw" and nearest[0]["score"] == pytest.approx(1.0, abs=1e-5)

    response = await platform.client.post(
        f"{API}/collections/{name}/items/delete", json={"filter": {"lang": "en"}}, headers=h
    )
    assert response.json() == {"deleted": 2}  # db and vec: cat's metadata has no lang since its upsert
    listed = (await platform.client.get(f"{API}/collections/{name}/items", headers=h)).json()
    assert [item["id"] for item in listed["items"]] == ["cat", "chat", "raw"]
    assert (await platform.client.delete(f"{API}/collections/{name}/items/raw", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/collections/{name}/items/raw", headers=h)).status_code == 404

    assert (await platform.client.delete(f"{API}/collections/{name}", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/collections/{name}", headers=h)).status_code == 404
    await wait_until(lambda: len(events) >= 2, what="collection events")
    assert [(e.type, e.data["name"]) for e in events] == [
        ("embeddings.collection.created", name),
        ("embeddings.collection.deleted", name),
    ]
    assert events[0].data == {"id": collection["id"], "name": name, "model": local.NAME, "dimensions": 256}


async def test_collection_rules(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=ALL)
    collection = await create_collection(platform, h, dimensions=128)
    name = collection["name"]

    async def status(method: str, path: str, body: dict) -> tuple[int, list[str]]:
        response = await platform.client.request(method, f"{API}{path}", json=body, headers=h)
        fields = (
            [e["field"] for e in response.json().get("errors", [])] if response.status_code >= 400 else []
        )
        return response.status_code, fields

    assert await status("POST", "/collections", {"name": name}) == (409, ["body.name"])
    assert await status("POST", "/collections", {"name": "odd", "dimensions": 100}) == (
        422,
        ["body.dimensions"],
    )
    assert await status("POST", "/collections", {"name": "Bad Name"}) == (422, ["body.name"])
    items = f"/collections/{name}/items"
    assert await status("PUT", items, {"items": [{"id": "a"}]}) == (422, ["body.items.0"])
    assert await status("PUT", items, {"items": [{"id": "a", "embedding": [1.0] * 256}]}) == (
        422,
        ["body.items.0.embedding"],
    )
    assert await status("PUT", items, {"items": [{"id": "a", "embedding": [0.0] * 128}]}) == (
        422,
        ["body.items.0.embedding"],
    )
    assert await status("PUT", items, {"items": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}) == (
        422,
        ["body.items.1.id"],
    )
    assert await status("POST", f"/collections/{name}/search", {"k": 3}) == (422, ["body"])
    assert await status("POST", f"/collections/{name}/search", {"query": "x", "k": 101}) == (422, ["body.k"])
    assert await status("POST", f"/collections/{name}/items/delete", {}) == (422, ["body"])
    # The collection's vectors are of its own size: a 128-dimension query finds its 128-dimension items.
    assert (await upsert(platform, h, name, [{"id": "a", "text": "hello"}]))["embedded"] in (0, 1)
    hits = await search(platform, h, name, query="hello")
    assert hits[0]["id"] == "a" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


async def test_collections_are_paginated_and_per_org(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, perms=ALL)
    names = sorted([(await create_collection(platform, h))["name"] for _ in range(3)])
    first = (await platform.client.get(f"{API}/collections", params={"limit": 2}, headers=h)).json()
    rest = (
        await platform.client.get(
            f"{API}/collections", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h
        )
    ).json()
    assert [c["name"] for c in first["items"] + rest["items"]] == names and rest["next_cursor"] is None
    other = signer.headers(f"org-{uuid.uuid4().hex[:12]}", perms=ALL)
    assert (await platform.client.get(f"{API}/collections", headers=other)).json()["items"] == []
    # The same name in another org is another collection.
    await create_collection(platform, other, name=names[0])


@pytest.mark.parametrize("where", [{}, {"kind": "doc"}])
async def test_search_is_served_by_the_hnsw_index(
    platform: Platform, signer: TestSigner, org: str, where: dict
) -> None:
    h = signer.headers(org, perms=ALL)
    name = (await create_collection(platform, h, dimensions=128))["name"]
    await upsert(platform, h, name, [{"id": "a", "text": "indexed", "metadata": {"kind": "doc"}}])
    async with platform.runtime.sessions() as session, session.begin():
        collection = await collections.get(session, org, name)
        query = collections.nearest(org, collection, np.ones(128, dtype=np.float32), 10, where)
        # With few rows the planner prefers a scan: forbidding it shows whether the index can serve
        # the query at all (an expression or predicate that differs from the index's cannot).
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(row[0] for row in await session.execute(explain(query)))
    assert "embeddings_ix_item_hnsw_128" in plan, plan


class Explain(Executable, ClauseElement):
    """`EXPLAIN <statement>`, compiled by the same compiler (so its parameters bind as usual)."""

    inherit_cache = False

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement


@compiles(Explain)
def _explain(element: Explain, compiler, **kw) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def explain(query) -> Explain:
    return Explain(query)


async def _last_used(platform: Platform, org: str) -> dict[str, object]:
    async with platform.runtime.sessions() as session:
        rows = await session.execute(
            text("SELECT encode(sha256, 'hex'), last_used_at FROM embeddings_cache WHERE org_id = :o"),
            {"o": org},
        )
        return {str(row[0]): row[1] for row in rows}


async def test_the_cache_is_bounded_by_age_and_rows(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=ALL)
    texts = [unique(t) for t in TEXTS]
    await embed(platform, h, {"input": texts})
    async with platform.runtime.sessions() as session, session.begin():
        # Age the rows: the first two last used 10 and 5 days ago, the third 2 hours ago.
        for i, days in enumerate((10, 5, 1 / 12)):
            await session.execute(
                text(
                    "UPDATE embeddings_cache SET last_used_at = now() - make_interval(secs => :s) "
                    "WHERE org_id = :o AND sha256 = sha256(convert_to(:t, 'UTF8'))"
                ),
                {"s": days * 86400, "o": org, "t": texts[i]},
            )
    # A hit refreshes a row unused for over an hour: the second text is young again.
    aged = await _last_used(platform, org)
    await embed(platform, h, {"input": texts[1]})
    refreshed = await _last_used(platform, org)
    changed = {k for k in aged if aged[k] != refreshed[k]}
    assert len(changed) == 1

    # Only this org's rows are counted by the test, but the bounds are the table's: keep the rows of
    # other tests (younger than 7 days, all of them) and drop the first text by age.
    settings = platform.runtime.config(EmbeddingsSettings).model_copy(update={"cache_max_age_days": 7})
    async with platform.runtime.sessions() as session, session.begin():
        assert await service.prune_cache(session, settings) >= 1
    left = await _last_used(platform, org)
    assert len(left) == 2 and changed <= set(left)

    # Beyond `cache_max_rows`, the least recently used go: keep one row in all, the newest.
    newest = unique("newest")
    await embed(platform, h, {"input": newest})
    async with platform.runtime.sessions() as session, session.begin():
        await service.prune_cache(session, settings.model_copy(update={"cache_max_rows": 1}))
        count = (await session.execute(text("SELECT count(*) FROM embeddings_cache"))).scalar_one()
    assert count == 1
    assert len(await _last_used(platform, org)) == 1
    before = local.model.texts_embedded
    await embed(platform, h, {"input": newest})
    assert local.model.texts_embedded == before  # the newest row is the one kept


async def test_the_cache_is_an_unlogged_table(platform: Platform) -> None:
    # Its rows write no WAL and a crash empties it: cached texts are embedded again, nothing is lost.
    async with platform.runtime.sessions() as session:
        persistence = await session.scalar(
            text("SELECT relpersistence::text FROM pg_class WHERE relname = 'embeddings_cache'")
        )
    assert persistence == "u"
