"""Reservations: all covering quotas or none, concurrent callers never over-commit, refusals name
the quota, release is idempotent, and a leaked reservation lapses at its TTL (clock injected)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from coder.services.resources.models import Reservation
from coder.services.resources.reservations import expire
from coder.tests.services.resources.factories import (
    API,
    create_quota,
    frozen_clock,
    read_quota,
    release,
    reserve,
)
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner
from coder.tests.support.workload import SPENDER, direct


async def test_reserve_against_every_covering_quota(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    whole = await create_quota(platform, h, hard={"cpu": "4", "sandboxes": 10})
    team = await create_quota(platform, h, scope="team", scope_id="t1", hard={"memory": "4Gi"})
    alice = await create_quota(platform, h, scope="user", scope_id="alice", hard={"sandboxes": 1})

    held = await reserve(
        platform,
        reserver,
        "alice",
        team_id="t1",
        resources={"sandboxes": 1, "cpu": "1500m", "memory": "3Gi"},
        reference="job-1",
    )
    assert held.status_code == 201, held.text
    body = held.json()
    assert body["status"] == "active" and body["reference"] == "job-1"
    assert body["resources"] == {
        "sandboxes": 1,
        "cpu": 1500,
        "memory": 3 * 2**30,
        "storage": None,
        "ai_credits": None,
    }
    assert (await read_quota(platform, h, whole["id"]))["used"]["cpu"] == 1500
    assert (await read_quota(platform, h, team["id"]))["used"]["memory"] == 3 * 2**30
    assert (await read_quota(platform, h, alice["id"]))["used"]["sandboxes"] == 1

    # Alice's own quota is full: refused, and nothing is held anywhere.
    refused = await reserve(platform, reserver, "alice", resources={"sandboxes": 1, "cpu": "100m"})
    assert refused.status_code == 409
    assert (await read_quota(platform, h, whole["id"]))["used"]["cpu"] == 1500
    # Bob in the same team: the team's memory is what runs out.
    over_team = await reserve(platform, reserver, "bob", team_id="t1", resources={"memory": "2Gi"})
    assert over_team.status_code == 409 and over_team.json()["quota"]["quota_id"] == team["id"]
    # Bob outside the team: only the org's quota applies.
    assert (
        await reserve(platform, reserver, "bob", resources={"memory": "2Gi", "cpu": 2})
    ).status_code == 201
    over_org = await reserve(platform, reserver, "carol", resources={"cpu": "600m"})
    assert over_org.status_code == 409 and over_org.json()["quota"]["scope"] == "org"


async def test_refusal_names_requested_used_limit_and_quota(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    exceeded = await listen(platform, "resources.quota.exceeded")
    quota = await create_quota(
        platform,
        h,
        name="Alice",
        scope="user",
        scope_id="alice",
        hard={"cpu": "1", "memory": "1Gi", "ai_credits": 5},
    )
    assert (
        await reserve(platform, reserver, "alice", resources={"cpu": "600m", "ai_credits": "4.5"})
    ).status_code == 201

    refused = await reserve(
        platform,
        reserver,
        "alice",
        team_id="t9",
        resources={"cpu": "500m", "memory": "512Mi", "ai_credits": "0.75"},
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/quota-exceeded")
    assert problem["detail"] == (
        "user quota 'Alice' (user alice) has no room for cpu: requested 500m, used 600m, limit 1000m"
    )
    cpu = {
        "quota_id": quota["id"],
        "name": "Alice",
        "scope": "user",
        "scope_id": "alice",
        "resource": "cpu",
        "limit": 1000,
        "used": 600,
        "requested": 500,
    }
    assert problem["quota"] == cpu
    credits = {**cpu, "resource": "ai_credits", "limit": 5.0, "used": 4.5, "requested": 0.75}
    assert problem["exceeded"] == [cpu, credits]  # memory fits: not named

    # Earlier tests' refusals may still be on their way: this org's is the one.
    ours = await wait_until(lambda: [e for e in exceeded if e.orgid == org], what="resources.quota.exceeded")
    (sent,) = ours
    assert sent.subject == quota["id"] and sent.source == "/coder/resources"
    assert sent.data == {**cpu, "user_id": "alice", "team_id": "t9"}


async def test_concurrent_reservations_never_over_commit(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    whole = await create_quota(platform, h, hard={"cpu": "10"})
    users = [
        await create_quota(platform, h, scope="user", scope_id=f"u{i}", hard={"sandboxes": 2})
        for i in range(4)
    ]
    # 64 callers, 4 users, each asking 1 sandbox and 500m: the org's cpu allows 20, each user 2 sandboxes.
    answers = await asyncio.gather(
        *(
            reserve(platform, reserver, f"u{i % 4}", resources={"sandboxes": 1, "cpu": "500m"})
            for i in range(64)
        )
    )
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) == 8  # 4 users x 2 sandboxes, well under the org's 20 cpu halves
    assert (await read_quota(platform, h, whole["id"]))["used"]["cpu"] == 8 * 500
    for quota in users:
        assert (await read_quota(platform, h, quota["id"]))["used"]["sandboxes"] == 2

    # The org's quota the tight one now: 12 more halves fit under 10 cores.
    answers = await asyncio.gather(
        *(reserve(platform, reserver, f"v{i}", resources={"cpu": "500m"}) for i in range(40))
    )
    assert [r.status_code for r in answers].count(201) == 12
    assert (await read_quota(platform, h, whole["id"]))["used"]["cpu"] == 10_000


async def test_release_is_idempotent_and_frees_room(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    quota = await create_quota(platform, h, hard={"sandboxes": 1})
    first = (await reserve(platform, reserver, resources={"sandboxes": 1})).json()
    assert (await reserve(platform, reserver, resources={"sandboxes": 1})).status_code == 409
    assert (await release(platform, reserver, first["id"])).status_code == 204
    assert (await release(platform, reserver, first["id"])).status_code == 204
    read = (await platform.client.get(f"{API}/reservations/{first['id']}", headers=h)).json()
    assert read["status"] == "released" and read["closed_at"] is not None
    assert (await read_quota(platform, h, quota["id"]))["used"]["sandboxes"] == 0
    assert (await reserve(platform, reserver, resources={"sandboxes": 1})).status_code == 201
    theirs = signer.workload_headers(f"{org}-x", audience="resources", caller=SPENDER.name)
    assert (await release(platform, theirs, first["id"])).status_code == 404


async def test_leaked_reservations_lapse_at_their_ttl(
    platform: Platform, signer: TestSigner, org: str, reserver: dict[str, str]
) -> None:
    h = signer.headers(org)
    quota = await create_quota(platform, h, hard={"cpu": "1"})
    with frozen_clock(platform) as clock:
        # An hour: the process's own reaper (real time) cannot reach it while the test runs.
        leaked = (await reserve(platform, reserver, resources={"cpu": 1}, ttl_seconds=3600)).json()
        assert leaked["status"] == "active"
        clock.advance(seconds=3599)
        assert (await reserve(platform, reserver, resources={"cpu": "1m"})).status_code == 409

        # Lazy: once its TTL passes it stops counting at once, before any reaper ran.
        clock.advance(seconds=1)
        assert (await read_quota(platform, h, quota["id"]))["used"]["cpu"] == 0
        lapsed = (await platform.client.get(f"{API}/reservations/{leaked['id']}", headers=h)).json()
        assert lapsed["status"] == "expired"
        listed = await platform.client.get(f"{API}/reservations", params={"status": "expired"}, headers=h)
        assert [r["id"] for r in listed.json()["items"]] == [leaked["id"]]
        again = await reserve(platform, reserver, resources={"cpu": 1}, ttl_seconds=60)
        assert again.status_code == 201, again.text

        # The reaper marks it; a late release changes nothing.
        assert await expire(platform.runtime.sessions, clock.now) >= 1
        assert (await release(platform, reserver, leaked["id"])).status_code == 204
        stored = await _stored(platform, leaked["id"])
        assert stored.status == "expired" and stored.closed_at == stored.expires_at
        active = await platform.client.get(f"{API}/reservations", params={"status": "active"}, headers=h)
        assert [r["id"] for r in active.json()["items"]] == [again.json()["id"]]


async def _stored(p: Platform, reservation_id: str) -> Any:
    async with p.runtime.sessions() as session:
        return (
            await session.execute(select(Reservation).where(Reservation.id == reservation_id))
        ).scalar_one()


async def test_reservation_input_names_the_field(platform: Platform, reserver: dict[str, str]) -> None:
    for body, field in [
        ({"resources": {}}, "resources"),
        ({"resources": {"sandboxes": 0}}, "resources"),
        ({"resources": {"memory": "lots"}}, "body.resources.memory"),
        ({"resources": {"cpu": 1}, "ttl_seconds": 0}, "body.ttl_seconds"),
    ]:
        response = await direct(platform, "resources", "POST", "/v1/reservations", reserver, json=body)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
