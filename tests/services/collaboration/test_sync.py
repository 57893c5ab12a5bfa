"""The y-websocket protocol end to end: pycrdt clients over real WebSockets through the gateway (and
straight to extra replicas), against the real database, Redis and broker of each backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from coder.tests.services.collaboration.conftest import Replica
from coder.tests.services.collaboration.factories import API, client, create_document, provider, read_document
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner

# A member's grants (an org owner's `*` includes collaboration:admin, which owns every document).
MEMBER = ["collaboration:read", "collaboration:write"]


def sync_url(address: str, document_id: str, through_gateway: bool = True) -> str:
    prefix = API if through_gateway else "/v1"
    return f"ws://{address}{prefix}/sync/{document_id}"


async def test_two_clients_editing_concurrently_converge_and_a_late_joiner_gets_everything(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    owner = signer.headers(org, sub="ada")
    document = await create_document(platform, owner, text="shared", org_access="editor")
    url = sync_url(address, document["id"])
    bob = signer.headers(org, sub="bob")
    async with provider(url, owner) as (doc_a, text_a), provider(url, bob) as (doc_b, text_b):
        assert str(text_a) == str(text_b) == "shared"
        # Both edit before either has seen the other's edit.
        with doc_a.transaction():
            text_a.insert(0, "ada: ")
        with doc_b.transaction():
            text_b.insert(len(text_b), " :bob")
        await wait_until(lambda: str(text_a) == str(text_b) == "ada: shared :bob", what="convergence")
        for i in range(5):  # interleaved typing at both ends
            text_a.insert(0, str(i % 10))
            text_b.insert(len(text_b), str(i % 10))
        await wait_until(lambda: str(text_a) == str(text_b) and len(str(text_a)) == 26, what="convergence")
        converged = str(text_a)
    # Every update the clients saw is stored: the REST read and a late joiner get the same text.
    assert (await read_document(platform, owner, document["id"]))["text"] == converged
    async with provider(url, bob) as (_, late):
        assert str(late) == converged


async def test_a_restart_loses_no_acknowledged_update(
    platform: Platform, signer: TestSigner, org: str, replica: Replica
) -> None:
    owner = signer.headers(org, sub="ada")
    document = await create_document(platform, owner)
    async with (
        replica() as first,
        client(sync_url(first, document["id"], through_gateway=False), owner) as ada,
    ):
        for word in ("durable ", "edits ", "survive"):
            await ada.insert(None, word)
        await ada.confirm()  # the server's step 2 comes after every update before it is stored
        acknowledged = str(ada.text)
    # The first replica is gone (its process stopped); a new one loads the document from the database.
    async with (
        replica() as second,
        client(sync_url(second, document["id"], through_gateway=False), owner) as bob,
    ):
        assert str(bob.text) == acknowledged == "durable edits survive"


async def test_viewers_receive_but_their_updates_are_refused(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    owner = signer.headers(org, sub="ada")
    document = await create_document(platform, owner, text="read me", viewers=["vic"])
    url = sync_url(address, document["id"])
    async with client(url, signer.headers(org, sub="vic", perms=MEMBER)) as vic, client(url, owner) as ada:
        assert str(vic.text) == "read me"
        await vic.insert(0, "defaced ")
        await vic.confirm()
        assert vic.denied == ["viewers may not edit this document"]
        await ada.insert(None, "!")
        await vic.until(lambda _: str(vic.text).endswith("!"))
        await ada.confirm()
        assert str(ada.text) == "read me!"  # the viewer's edit never reached anyone
    assert (await read_document(platform, owner, document["id"]))["text"] == "read me!"
    # Without collaboration:write a member's connection is read-only as well.
    editor_without_write = signer.headers(org, sub="ada", perms=["collaboration:read"])
    async with client(url, editor_without_write) as reader:
        await reader.insert(0, "x")
        await reader.confirm()
        assert reader.denied


async def test_presence_is_shared_and_removed_when_a_client_leaves(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    owner = signer.headers(org, sub="ada")
    document = await create_document(platform, owner, text="cursor here", editors=["bob"])
    url = sync_url(address, document["id"])
    presence_url = f"{API}/documents/{document['id']}/presence"
    async with client(url, owner) as ada:
        async with client(url, signer.headers(org, sub="bob")) as bob:
            await bob.announce({"user": {"name": "Bob"}, "cursor": {"anchor": 3, "head": 6}})
            await ada.until(lambda _: bool(ada.peers))
            assert list(ada.peers.values()) == [{"user": {"name": "Bob"}, "cursor": {"anchor": 3, "head": 6}}]
            present = (await platform.client.get(presence_url, headers=owner)).json()
            assert [(p["user"], p["state"]["cursor"]) for p in present] == [("bob", {"anchor": 3, "head": 6})]
        await ada.until(lambda _: not ada.peers)  # bob left: his presence is removed
        assert (await platform.client.get(presence_url, headers=owner)).json() == []


async def test_updates_reach_clients_of_another_replica(
    platform: Platform, signer: TestSigner, org: str, address: str, replica: Replica
) -> None:
    if platform.backend != "real":
        pytest.skip("replicas meet through Redis: the in-process cache is one process's own")
    owner = signer.headers(org, sub="ada")
    document = await create_document(platform, owner, text="|", org_access="editor")
    async with (
        replica() as other,
        client(sync_url(address, document["id"]), owner) as ada,
        client(sync_url(other, document["id"], through_gateway=False), signer.headers(org)) as bob,
    ):
        await ada.insert(0, "left")
        await bob.insert(None, "right")
        await ada.until_text("left|right")
        await bob.until_text("left|right")
        await bob.announce({"user": {"name": "Bob"}})
        await ada.until(lambda _: bool(ada.peers))
    assert (await read_document(platform, owner, document["id"]))["text"] == "left|right"


@pytest.mark.parametrize(
    ("perms", "same_org", "code"),
    [(["collaboration:write"], True, 4403), (["*"], False, 4404)],
)
async def test_refusals_close_with_a_code(
    platform: Platform,
    signer: TestSigner,
    org: str,
    address: str,
    perms: list[str],
    same_org: bool,
    code: int,
) -> None:
    document = await create_document(platform, signer.headers(org))
    caller = signer.headers(org if same_org else f"org-{uuid.uuid4().hex[:12]}", perms=perms)
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(sync_url(address, document["id"]), additional_headers=caller) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_a_member_of_nothing_and_a_missing_token_are_refused(
    platform: Platform, signer: TestSigner, org: str, address: str
) -> None:
    document = await create_document(platform, signer.headers(org, sub="ada"))
    stranger = signer.headers(org, perms=MEMBER)
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(sync_url(address, document["id"]), additional_headers=stranger) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    with pytest.raises(InvalidStatus) as refused:
        async with connect(sync_url(address, document["id"])):
            pass
    assert refused.value.response.status_code == 403
