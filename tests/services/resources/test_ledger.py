"""The ledger (compute reserved here, AI spend read from usage) and the caller's own quotas."""

from __future__ import annotations

from datetime import timedelta

from coder.tests.services.resources.factories import API, create_quota, frozen_clock, release, reserve
from coder.tests.services.usage.factories import create_budget, create_meter, event, ingest
from coder.tests.services.usage.factories import reserve as reserve_budget
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


async def test_ledger_adds_compute_held_and_ai_spend_from_usage(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str], reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    await create_quota(platform, h, scope="user", scope_id="alice", hard={"cpu": 4})
    budget = await create_budget(platform, h, name="Alice AI", scope="user", scope_id="alice", limit=20)
    assert (await reserve_budget(platform, spender, 2.5, user_id="alice")).status_code == 201
    meter = await create_meter(platform, h, group_by=["user_id"])
    with frozen_clock(platform) as clock:
        now = clock.now
        await ingest(
            platform,
            h,
            [
                event(time=(now + timedelta(seconds=10)).isoformat(), user_id="alice", cost_usd=1.25),
                event(time=(now + timedelta(seconds=20)).isoformat(), user_id="bob", cost_usd=7),
            ],
        )
        start = now
        one = (
            await reserve(platform, reserver, "alice", resources={"cpu": 2, "memory": "1Gi", "sandboxes": 1})
        ).json()
        assert (await reserve(platform, reserver, "bob", resources={"cpu": 1})).status_code == 201
        clock.advance(seconds=100)
        assert (await release(platform, reserver, one["id"])).status_code == 204
        lapsing = await reserve(
            platform, reserver, "alice", resources={"storage": "2Gi", "ai_credits": "1.5"}, ttl_seconds=10
        )
        assert lapsing.status_code == 201, lapsing.text
        clock.advance(seconds=50)  # the second one lapsed after 10 s

        params = {"scope": "user", "scope_id": "alice", "from": start.isoformat(), "meter": meter["slug"]}
        answer = await platform.client.get(f"{API}/ledger", params=params, headers=h)
        whole = (await platform.client.get(f"{API}/ledger", headers=h)).json()
    assert answer.status_code == 200, answer.text
    ledger = answer.json()
    assert (ledger["scope"], ledger["scope_id"]) == ("user", "alice")
    assert ledger["quota"]["hard"]["cpu"] == 4000 and ledger["quota"]["used"]["cpu"] == 0
    compute = ledger["compute"]
    assert compute["reservations"] == 2 and compute["active_reservations"] == 0
    assert compute["sandbox_seconds"] == 100 and compute["cpu_core_seconds"] == 200
    assert compute["memory_gib_seconds"] == 100 and compute["storage_gib_seconds"] == 20
    assert compute["ai_credits_reserved"] == 1.5
    ai = ledger["ai"]
    assert ai["available"] is True and ai["metered"] == 1.25 and ai["meter"] == meter["slug"]
    (alice_budget,) = ai["budgets"]
    assert (
        alice_budget["id"] == budget["id"] and alice_budget["limit"] == 20 and alice_budget["reserved"] == 2.5
    )
    assert (
        whole["scope_id"] == org and whole["quota"] is None and whole["compute"]["active_reservations"] == 1
    )


async def test_ledger_without_usage_access_says_so(platform: Platform, signer: TestSigner, org: str) -> None:
    # The ledger reads usage with the caller's own token: no usage:read, no AI numbers, and it says why.
    h = signer.headers(org, perms=["resources:read"])
    answer = await platform.client.get(f"{API}/ledger", params={"scope": "team", "scope_id": "t1"}, headers=h)
    assert answer.status_code == 200, answer.text
    ai = answer.json()["ai"]
    assert ai["available"] is False and ai["detail"].startswith("usage answered 403")


async def test_ledger_input_names_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    for params, field in [
        ({"scope": "user"}, "query.scope_id"),
        ({"scope_id": "another-org"}, "query.scope_id"),
        ({"from": "2030-01-01T00:00:00Z", "to": "2029-01-01T00:00:00Z"}, "query.from"),
        ({"meter": "Not A Slug"}, "query.meter"),
    ]:
        answer = await platform.client.get(f"{API}/ledger", params=params, headers=signer.headers(org))
        assert answer.status_code == 422, answer.text
        assert field in [e["field"] for e in answer.json()["errors"]]


async def test_my_quotas_and_what_remains(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    admin = signer.headers(org)
    me = signer.headers(org, perms=["resources:read"], sub="alice")
    await create_quota(platform, admin, hard={"cpu": 8, "memory": "8Gi"})
    await create_quota(platform, admin, scope="team", scope_id="t1", hard={"cpu": 2})
    await create_quota(platform, admin, scope="user", scope_id="alice", hard={"cpu": 4, "sandboxes": 2})
    await create_quota(platform, admin, scope="user", scope_id="bob", hard={"cpu": 1})
    assert (
        await reserve(platform, reserver, "alice", resources={"cpu": "500m", "sandboxes": 1})
    ).status_code == 201
    assert (await reserve(platform, reserver, "bob", resources={"memory": "6Gi"})).status_code == 201

    mine = (await platform.client.get(f"{API}/me", params={"team_id": "t1"}, headers=me)).json()
    assert mine["user_id"] == "alice" and mine["team_id"] == "t1"
    assert sorted(q["scope"] for q in mine["quotas"]) == ["org", "team", "user"]
    assert mine["remaining"] == {
        "sandboxes": 1,
        "cpu": 2000,  # the team's 2 cores: Alice's half was reserved outside the team (org 7.5, user 3.5 left)
        "memory": 2 * 2**30,
        "storage": None,
        "ai_credits": None,
    }
    alone = (await platform.client.get(f"{API}/me", headers=me)).json()
    assert alone["remaining"]["cpu"] == 3500
