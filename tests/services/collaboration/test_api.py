"""collaboration's REST routes: documents and their roles, snapshots and compaction, comments whose
ranges follow their text through edits, and the events that go out through the outbox."""

from __future__ import annotations

from typing import Any

import pytest

from coder.shared.events import CloudEvent
from coder.tests.services.collaboration.factories import API, client, create_document, read_document
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner

MEMBER = ["collaboration:read", "collaboration:write"]


def member(signer: TestSigner, org: str, sub: str) -> dict[str, str]:
    return signer.headers(org, sub=sub, perms=MEMBER)


async def test_documents_have_roles(platform: Platform, signer: TestSigner, org: str) -> None:
    ada, eve, vic, sam = (member(signer, org, s) for s in ("ada", "eve", "vic", "sam"))
    document = await create_document(
        platform, ada, title="Plan", text="hello", editors=["eve"], viewers=["vic"]
    )
    assert (document["role"], document["text"], document["owner"]) == ("owner", "hello", "ada")
    url = f"{API}/documents/{document['id']}"
    assert (await platform.client.get(url, headers=eve)).json()["role"] == "editor"
    assert (await platform.client.get(url, headers=vic)).json()["role"] == "viewer"
    assert (await platform.client.get(url, headers=sam)).status_code == 404  # not a member: not there
    listed = (await platform.client.get(f"{API}/documents", headers=sam)).json()["items"]
    assert document["id"] not in [d["id"] for d in listed]
    assert [
        d["id"] for d in (await platform.client.get(f"{API}/documents", headers=vic)).json()["items"]
    ] == [document["id"]]
    # Only the owner changes members or deletes; a viewer may not comment.
    assert (await platform.client.patch(url, json={"title": "X"}, headers=eve)).status_code == 403
    comment = {"body": "hi", "start": 0, "end": 5}
    assert (await platform.client.post(f"{url}/comments", json=comment, headers=vic)).status_code == 403
    changed = await platform.client.patch(url, json={"org_access": "viewer", "viewers": []}, headers=ada)
    assert changed.status_code == 200, changed.text
    assert (await platform.client.get(url, headers=sam)).json()["role"] == "viewer"
    assert (await platform.client.delete(url, headers=eve)).status_code == 403
    assert (await platform.client.delete(url, headers=ada)).status_code == 204
    assert (await platform.client.get(url, headers=ada)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": ""}, "body.title"),
        ({"title": "T", "org_access": "everyone"}, "body.org_access"),
        ({"title": "T", "editors": [""]}, "body.editors.0"),
    ],
)
async def test_bad_documents_name_the_field(
    platform: Platform, signer: TestSigner, org: str, body: dict[str, Any], field: str
) -> None:
    response = await platform.client.post(f"{API}/documents", json=body, headers=signer.headers(org))
    assert response.status_code == 422
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_snapshots_compact_the_log_and_keep_history(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    owner = signer.headers(org, sub="ada")
    events = await listen(platform, "collaboration.document.*")
    document = await create_document(platform, owner, text="one")
    url = f"{API}/documents/{document['id']}"
    first = await platform.client.post(f"{url}/snapshots", headers=owner)
    assert first.status_code == 201, first.text
    assert first.json()["updates_merged"] == 1
    assert (await platform.client.post(f"{url}/snapshots", headers=owner)).status_code == 409  # nothing new
    async with client(f"ws://{address}{API}/sync/{document['id']}", owner) as ada:
        await ada.insert(None, " two")
        await ada.insert(None, " three")
        await ada.confirm()
        assert (await read_document(platform, owner, document["id"]))["pending_updates"] == 2
    # The last client left: its updates are folded into a snapshot.
    history = await wait_until(
        lambda: _snapshots(platform, owner, url, 2), what="the snapshot taken when the last client left"
    )
    assert [s["updates_merged"] for s in history] == [2, 1]
    old = (await platform.client.get(f"{url}/snapshots/{history[1]['id']}", headers=owner)).json()
    assert old["text"] == "one"
    now = await read_document(platform, owner, document["id"])
    assert (now["text"], now["pending_updates"]) == ("one two three", 0)
    mine = await wait_until(lambda: _of(events, document["id"], 3), what="the events")
    assert [e.type for e in mine] == [
        "collaboration.document.created",
        "collaboration.document.snapshotted",
        "collaboration.document.snapshotted",
    ]
    assert mine[2].data["updates_merged"] == 2


def _of(events: list[CloudEvent], document_id: str, count: int) -> list[CloudEvent]:
    """The events about one document, once there are `count` of them (the bus carries every test's)."""
    mine = [e for e in events if e.data["document_id"] == document_id]
    return mine if len(mine) >= count else []


async def _snapshots(
    platform: Platform, headers: dict[str, str], url: str, count: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await platform.client.get(f"{url}/snapshots", headers=headers)).json()[
        "items"
    ]
    return items if len(items) >= count else []


async def test_a_comment_stays_on_its_text_through_edits(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    owner = signer.headers(org, sub="ada")
    events = await listen(platform, "collaboration.document.commented")
    document = await create_document(platform, owner, text="hello world")
    url = f"{API}/documents/{document['id']}/comments"
    created = await platform.client.post(
        url, json={"body": "which world?", "start": 6, "end": 11}, headers=owner
    )
    assert created.status_code == 201, created.text
    thread = created.json()
    assert (thread["start"], thread["end"], thread["quote"]) == (6, 11, "world")
    async with client(f"ws://{address}{API}/sync/{document['id']}", owner) as ada:
        await ada.insert(0, "oh, ")  # before the range
        await ada.insert(10, "big ")  # just before it ("oh, hello |world")
        await ada.insert(None, "!")  # just after it
        await ada.confirm()
        assert str(ada.text) == "oh, hello big world!"
    reply = await platform.client.post(
        url, json={"body": "this one", "thread_id": thread["id"]}, headers=owner
    )
    assert reply.status_code == 201, reply.text
    comments = (await platform.client.get(url, headers=owner)).json()["items"]
    assert [(c["body"], c["start"], c["end"], c["quote"]) for c in comments] == [
        ("which world?", 14, 19, "world"),
        ("this one", None, None, ""),
    ]
    resolved = await platform.client.post(
        f"{url}/{thread['id']}/resolve", json={"resolved": True}, headers=owner
    )
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "ada"
    assert (
        len((await platform.client.get(url, params={"resolved": "true"}, headers=owner)).json()["items"]) == 2
    )
    assert (await platform.client.get(url, params={"resolved": "false"}, headers=owner)).json()["items"] == []
    bad = await platform.client.post(url, json={"body": "x", "start": 3, "end": 99}, headers=owner)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "end"
    mine = await wait_until(lambda: _of(events, document["id"], 2), what="the comment events")
    assert [(e.data["quote"], e.data["thread_id"]) for e in mine] == [("world", None), ("", thread["id"])]
