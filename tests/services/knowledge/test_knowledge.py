"""knowledge through the gateway with real sign-up and workload identity: documents indexed from
knowledge's own events (vectors in embeddings, written with the org's background token), hybrid
search with citations, revisions and restore, team permissions, code sources from archives and IDE
pushes, and its place as a context source of ai (private collections never reach an external
provider)."""

from __future__ import annotations

import io
import tarfile
import uuid
import zipfile

from coder.shared.http import WORKLOAD_ORG_TOKEN_PATH
from coder.tests.gateway.factories import member, owner
from coder.tests.services.ai.conftest import new_org
from coder.tests.services.knowledge.conftest import AI_SECRET, KNOWLEDGE_SECRET, World
from coder.tests.services.knowledge.factories import API, collection, document, indexed, ok, search
from coder.tests.support.workload import direct


def word() -> str:
    """A word no other test wrote: full text and vectors must find it by itself."""
    return "zq" + uuid.uuid4().hex[:10]


async def test_a_document_edit_is_searchable_after_reindexing(world: World) -> None:
    boss = await owner(world.client)
    h = boss.headers
    notes = await collection(world.client, h, description="team notes")
    old, new = word(), word()
    body = f"# Deploy\n\nRoll out with {old} on Fridays.\n\n## Rollback\n\nUndo with the previous image.\n"
    doc = await document(world.client, h, notes["id"], "Runbook", body)
    assert doc["revision"] == 1 and doc["index"]["status"] == "pending"
    read = await indexed(world.client, h, doc["id"], 1)
    assert read["index"]["status"] == "indexed", read["index"]

    hits = (await search(world.client, h, f"how do we roll out with {old}"))["data"]
    top = hits[0]
    assert old in top["snippet"] and top["private"] is False
    assert top["text_rank"] == 1 and top["vector_rank"] is not None  # both halves found it
    cited = top["citation"]
    assert (cited["collection"], cited["path"], cited["revision"]) == (notes["name"], "Runbook", 1)
    assert cited["heading"] == "Deploy" and cited["start_line"] == 1

    # Full text ranks a chunk holding more of the query's words above one repeating a single word.
    one, two = word(), word()
    pair = await document(
        world.client,
        h,
        notes["id"],
        "Words",
        f"# Many\n\n{one} {one} {one} {one}.\n\n# Both\n\n{one} {two}.\n",
    )
    await indexed(world.client, h, pair["id"], 1)
    ranked = {
        hit["citation"]["heading"]: hit["text_rank"]
        for hit in (await search(world.client, h, f"{one} {two}"))["data"]
        if hit["text_rank"] is not None
    }
    assert ranked == {"Both": 1, "Many": 2}, ranked
    await ok(await world.client.delete(f"{API}/documents/{pair['id']}", headers=h), 204)

    edited = await ok(
        await world.client.patch(
            f"{API}/documents/{doc['id']}", json={"content": body.replace(old, new)}, headers=h
        )
    )
    assert edited["revision"] == 2 and edited["index"]["status"] == "pending"
    await indexed(world.client, h, doc["id"], 2)
    hits = (await search(world.client, h, new))["data"]
    assert hits and new in hits[0]["snippet"] and hits[0]["citation"]["revision"] == 2
    assert not [hit for hit in (await search(world.client, h, old))["data"] if old in hit["snippet"]]

    # Restore makes revision 1's text current again, as revision 3; history stays.
    restored = await ok(
        await world.client.post(f"{API}/documents/{doc['id']}/revisions/1/restore", headers=h)
    )
    assert restored["revision"] == 3 and old in restored["content"]
    revisions = await ok(await world.client.get(f"{API}/documents/{doc['id']}/revisions", headers=h))
    assert [(r["revision"], r["restored_from"]) for r in revisions["items"]] == [(3, 1), (2, None), (1, None)]
    await indexed(world.client, h, doc["id"], 3)
    assert old in (await search(world.client, h, old))["data"][0]["snippet"]

    # Deleted: its chunks go at once, so search no longer cites it.
    await ok(await world.client.delete(f"{API}/documents/{doc['id']}", headers=h), 204)
    assert (await search(world.client, h, old))["data"] == []
    gone = await world.client.get(f"{API}/documents/{doc['id']}", headers=h)
    assert gone.status_code == 404


async def test_full_text_ranks_by_words_held_reading_only_the_groups_it_needs(world: World) -> None:
    """The full-text half reads the chunks holding every word, all but one, then any, stopping once
    a group holds its candidates (k=5: 20); within each, more of the query's words rank first."""
    boss = await owner(world.client)
    h = boss.headers
    shelf = await collection(world.client, h)
    a, b, c, e, f, g, x = (word() for _ in range(7))
    sections = [f"# Every {i}\n\n{a} {b} {c}.\n" for i in range(22)]
    sections += [f"# Pair\n\n{a} {b} {a} {b} {a} {b} {e} {f}.\n", f"# Single\n\n{c} {c} {c} {c} {x} {x}.\n"]
    doc = await document(world.client, h, shelf["id"], "Words", "\n".join(sections))
    assert (await indexed(world.client, h, doc["id"], 1))["index"]["status"] == "indexed"

    async def text_ranked(query: str) -> dict[str, int]:
        hits = (await search(world.client, h, query, k=5, collections=[shelf["id"]]))["data"]
        return {hit["citation"]["heading"]: hit["text_rank"] for hit in hits if hit["text_rank"]}

    # 22 chunks hold all three words: the best 20 are among them, the repeated pair never ranks.
    top = await text_ranked(f"{a} {b} {c}")
    assert len(top) == 5 and all(heading.startswith("Every") for heading in top), top
    # No chunk holds all words or all but one: two words held rank above one word repeated, with
    # three query words and with four (where the any-word group counts them word by word).
    assert await text_ranked(f"{e} {f} {x}") == {"Pair": 1, "Single": 2}
    assert await text_ranked(f"{e} {f} {x} {g}") == {"Pair": 1, "Single": 2}


async def test_a_team_collection_is_404_outside_the_team(world: World) -> None:
    boss = await owner(world.client)
    h = boss.headers
    inside, outside = await member(world.client, boss, "member"), await member(world.client, boss, "member")
    team = await ok(await world.client.post("/api/teams", json={"name": "platform"}, headers=h), 201)
    await ok(await world.client.put(f"/api/teams/{team['id']}/members/{inside.user_id}", headers=h))
    secret = word()
    restricted = await collection(world.client, h, teams=[team["id"]])
    doc = await document(world.client, h, restricted["id"], "Keys", f"rotate the {secret} quarterly")
    await indexed(world.client, h, doc["id"], 1)

    for path in (f"{API}/collections/{restricted['id']}", f"{API}/documents/{doc['id']}"):
        assert (await world.client.get(path, headers=inside.headers)).status_code == 200
        refused = await world.client.get(path, headers=outside.headers)
        assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"
    listed = await ok(await world.client.get(f"{API}/collections", headers=outside.headers))
    assert restricted["id"] not in [c["id"] for c in listed["items"]]
    assert (await search(world.client, inside.headers, secret))["data"]
    assert (await search(world.client, outside.headers, secret))["data"] == []


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


async def test_code_sources_from_archives_and_pushes(world: World) -> None:
    boss = await owner(world.client)
    h = boss.headers
    code = await collection(world.client, h)
    source = await ok(
        await world.client.post(f"{API}/collections/{code['id']}/sources", json={"name": "repo"}, headers=h),
        201,
    )
    fn = "retry_" + uuid.uuid4().hex[:8]
    python = f"import time\n\n\ndef {fn}(attempts):\n    return attempts * 2\n\n\nclass Client:\n    pass\n"
    upload = _tar(
        {"repo/app.py": python.encode(), "repo/logo.png": b"\x89PNG\x00\x00", "repo/.git/HEAD": b"x"}
    )
    path = f"{API}/sources/{source['id']}/archive"
    answer = await ok(
        await world.client.put(path, content=upload, headers={**h, "content-type": "application/gzip"})
    )
    assert (answer["added"], answer["deleted"]) == (1, 0)  # the binary and .git are not indexed
    files = await ok(await world.client.get(f"{API}/collections/{code['id']}/documents", headers=h))
    [app] = files["items"]
    assert app["path"] == "repo/app.py"
    await indexed(world.client, h, app["id"], 1)
    hit = (await search(world.client, h, fn, sources=[source["id"]]))["data"][0]
    assert hit["citation"]["heading"] == f"repo/app.py > {fn}"
    assert (hit["citation"]["start_line"], hit["citation"]["end_line"]) == (4, 5)

    # A zip replaces the files: app.py unchanged (no new revision), a new one added.
    zipped = _zip(
        {
            "repo/app.py": python.encode(),
            "repo/util.go": b"package util\n\nfunc Add(a int) int {\n\treturn a\n}\n",
        }
    )
    answer = await ok(
        await world.client.put(path, content=zipped, headers={**h, "content-type": "application/zip"})
    )
    assert (answer["added"], answer["unchanged"]) == (1, 1)

    # The IDE pushes a change and a deletion.
    push = {
        "files": [{"path": "repo/app.py", "content": python + "\n# edited\n"}],
        "delete": ["repo/util.go"],
    }
    answer = await ok(await world.client.put(f"{API}/sources/{source['id']}/files", json=push, headers=h))
    assert (answer["updated"], answer["deleted"]) == (1, 1)

    # Refusals name the field: a path climbing out, an archive over the limit, a bad path pushed.
    for evil in ("../etc/passwd", "/etc/passwd"):
        refused = await world.client.put(path, content=_tar({evil: b"x"}), headers=h)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body", refused.text
    refused = await world.client.put(path, content=b"not an archive at all", headers=h)
    assert refused.status_code == 422
    bad = {"files": [{"path": "a/../../b.py", "content": "x"}]}
    refused = await world.client.put(f"{API}/sources/{source['id']}/files", json=bad, headers=h)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "body.files.0.path"
    # Nothing stored was lost by the refusals.
    files = await ok(await world.client.get(f"{API}/collections/{code['id']}/documents", headers=h))
    assert [f["path"] for f in files["items"]] == ["repo/app.py"]


async def test_a_zip_bomb_stops_at_the_limit(world: World) -> None:
    boss = await owner(world.client)
    h = boss.headers
    code = await collection(world.client, h)
    source = await ok(
        await world.client.post(f"{API}/collections/{code['id']}/sources", json={"name": "bomb"}, headers=h),
        201,
    )
    # 30 MB of one byte compress to some 30 KB; the unpacked limit here is 20 MB.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(30):
            archive.writestr(f"f{i}.txt", b"a" * (1024 * 1024))
    refused = await world.client.put(
        f"{API}/sources/{source['id']}/archive", content=out.getvalue(), headers=h
    )
    assert refused.status_code == 413 and "body" in refused.json()["detail"], refused.text


async def test_a_private_collection_never_reaches_an_external_provider(world: World) -> None:
    org = await new_org(world)  # type: ignore[arg-type]
    h = org.headers
    shared_word, private_word = word(), word()
    public = await collection(world.client, h)
    private = await collection(world.client, h, private=True)
    one = await document(world.client, h, public["id"], "Public", f"the {shared_word} handbook is public")
    two = await document(world.client, h, private["id"], "Secret", f"the {private_word} handbook is private")
    await indexed(world.client, h, one["id"], 1)
    assert (await indexed(world.client, h, two["id"], 1))["index"]["status"] == "indexed"  # local model
    hits = (await search(world.client, h, f"{shared_word} {private_word} handbook"))["data"]
    assert {hit["private"] for hit in hits} == {False, True}

    world.provider.reset()
    body = {
        "model": "chat",
        "messages": [
            {"role": "user", "content": f"what do the {shared_word} and {private_word} handbooks say?"}
        ],
        "context": {"sources": ["knowledge"]},
    }
    answer = await world.client.post("/api/ai/v1/chat/completions", json=body, headers=h)
    assert answer.status_code == 200, answer.text
    sent = str([seen.body for seen in world.provider.requests])
    assert shared_word in sent.split("Context")[-1]  # the public snippet went as context
    assert f"the {private_word} handbook is private" not in sent  # the private one never did

    # ai's /v1/context says what it left out and why.
    context = await ok(
        await world.client.post(
            "/api/ai/v1/context",
            json={"query": f"{shared_word} {private_word}", "sources": ["knowledge"]},
            headers=h,
        )
    )
    contents = " ".join(piece["content"] for piece in context["pieces"])
    assert shared_word in contents and private_word not in contents
    assert any("private" in why for why in context["left_out"])
    local = await ok(
        await world.client.post(
            "/api/ai/v1/context",
            json={"query": f"{shared_word} {private_word}", "sources": ["knowledge"], "external": False},
            headers=h,
        )
    )
    assert private_word in " ".join(piece["content"] for piece in local["pieces"])


async def test_the_indexers_org_token_is_knowledges_alone(world: World) -> None:
    """The token the indexer acts with (no user): knowledge's secret for an existing org, at embeddings
    only; ai (no `background_grants`) gets none, a wrong secret none, an unknown org none."""
    boss = await owner(world.client)
    ask = {"caller": "knowledge", "secret": KNOWLEDGE_SECRET, "audience": "embeddings", "org": boss.org_id}
    granted = await ok(await world.client.post(WORKLOAD_ORG_TOKEN_PATH, json=ask))
    token = {"Authorization": f"Bearer {granted['token']}"}
    platform = world.platform
    assert (await direct(platform, "embeddings", "GET", "/v1/collections", token)).status_code == 200
    # Good only at embeddings (knowledge refuses it), and never at the gateway.
    assert (await direct(platform, "knowledge", "GET", "/v1/collections", token)).status_code == 401
    assert (await world.client.get("/api/embeddings/v1/collections", headers=token)).status_code == 401
    refused = [
        ({**ask, "secret": "wrong"}, 401),
        ({**ask, "caller": "ai", "secret": AI_SECRET}, 403),
        ({**ask, "audience": "secrets"}, 403),
        ({**ask, "org": str(uuid.uuid4())}, 422),
    ]
    for body, status in refused:
        assert (await world.client.post(WORKLOAD_ORG_TOKEN_PATH, json=body)).status_code == status, body
