"""Budgets: reserve-then-settle checked atomically in Redis, settled in Postgres, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.usage import holds
from coder.tests.services.usage.factories import (
    API,
    create_budget,
    read_budget,
    read_reservation,
    release,
    reserve,
    settle,
)
from coder.tests.support.platform import Platform, listen, sample, wait_until
from coder.tests.support.tokens import TestSigner


async def test_budget_crud(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=["usage:read", "usage:admin"])
    monthly = await create_budget(platform, h, name="Org monthly", limit=250.5)
    now = datetime.now(UTC)
    assert monthly["period_start"] == now.strftime("%Y-%m-01T00:00:00Z")
    assert monthly["spent"] == 0 and monthly["reserved"] == 0 and monthly["remaining"] == 250.5
    daily = await create_budget(
        platform, h, scope="user", scope_id="u1", metric="tokens", limit=5000, period="day"
    )
    assert daily["period_start"] == now.strftime("%Y-%m-%dT00:00:00Z")
    total = await create_budget(platform, h, scope="api_key", scope_id="k1", period="total")
    assert total["period_start"] == "1970-01-01T00:00:00Z" and total["period_end"] is None

    first = (await platform.client.get(f"{API}/budgets", params={"limit": 2}, headers=h)).json()
    rest = (
        await platform.client.get(
            f"{API}/budgets", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h
        )
    ).json()
    assert [b["id"] for b in first["items"] + rest["items"]] == [monthly["id"], daily["id"], total["id"]]
    assert rest["next_cursor"] is None
    users = (await platform.client.get(f"{API}/budgets", params={"scope": "user"}, headers=h)).json()
    assert [b["id"] for b in users["items"]] == [daily["id"]]

    changed = await platform.client.patch(
        f"{API}/budgets/{daily['id']}", json={"limit": 10, "name": "Tight"}, headers=h
    )
    assert changed.status_code == 200 and changed.json()["limit"] == 10 and changed.json()["name"] == "Tight"
    assert (await platform.client.delete(f"{API}/budgets/{daily['id']}", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/budgets/{daily['id']}", headers=h)).status_code == 404


async def test_reserve_or_refuse_naming_the_budget(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    exceeded = await listen(platform, "usage.budget.exceeded")
    await create_budget(platform, h, name="Org", limit=100)
    user = await create_budget(
        platform, h, name="Alice daily", scope="user", scope_id="u1", limit=1, period="day"
    )

    held = await reserve(platform, spender, 0.6, user_id="u1", team_id="t1")
    assert held.status_code == 201, held.text
    assert held.json()["status"] == "reserved" and held.json()["expires_at"]
    assert len(held.json()["budget_ids"]) == 2

    refused = await reserve(platform, spender, 0.6, user_id="u1")
    assert refused.status_code == 402
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/budget-exceeded") and "Alice daily" in problem["detail"]
    assert problem["budget"] == {
        "id": user["id"],
        "name": "Alice daily",
        "scope": "user",
        "scope_id": "u1",
        "metric": "cost_usd",
        "period": "day",
        "period_start": problem["budget"]["period_start"],
        "limit": 1.0,
        "spent": 0.0,
        "reserved": 0.6,
        "requested": 0.6,
    }
    # Another user is not held back by Alice's budget.
    assert (await reserve(platform, spender, 0.6, user_id="u2")).status_code == 201

    await wait_until(lambda: exceeded, what="usage.budget.exceeded on the bus")
    (sent,) = exceeded
    assert sent.orgid == org and sent.subject == user["id"] and sent.source == "/coder/usage"
    assert sent.data["id"] == user["id"] and sent.data["requested"] == 0.6 and sent.data["user_id"] == "u1"

    state = await read_budget(platform, h, user["id"])
    assert (state["spent"], state["reserved"], state["remaining"]) == (0, 0.6, 0.4)


async def test_every_covering_budget_must_have_room(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    team = await create_budget(platform, h, name="Team", scope="team", scope_id="t1", limit=5)
    key = await create_budget(platform, h, name="Key", scope="api_key", scope_id="k1", limit=2)
    await create_budget(platform, h, name="Tokens", metric="tokens", limit=1)  # another metric: not checked

    over_key = await reserve(platform, spender, 3, user_id="u1", team_id="t1", api_key_id="k1")
    assert over_key.status_code == 402 and over_key.json()["budget"]["id"] == key["id"]
    assert (await read_budget(platform, h, team["id"]))["reserved"] == 0  # refused: nothing held anywhere

    assert (
        await reserve(platform, spender, 2, user_id="u1", team_id="t1", api_key_id="k1")
    ).status_code == 201
    over_team = await reserve(platform, spender, 3.5, user_id="u2", team_id="t1")
    assert over_team.status_code == 402 and over_team.json()["budget"]["id"] == team["id"]
    assert over_team.json()["budget"]["reserved"] == 2
    assert (await reserve(platform, spender, 3, user_id="u2", team_id="t1")).status_code == 201
    assert (await reserve(platform, spender, 100, user_id="u3")).status_code == 201  # no budget covers u3


async def test_a_hold_whose_budgets_are_known_opens_no_database_session(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the process knows the caller's budgets, a hold is one Redis script run: no session, no
    transaction (its row reaches Postgres in the writer's next batch)."""
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=10)
    assert (await reserve(platform, spender, 1)).status_code == 201  # reads the budgets
    sessions, opened = platform.runtime.sessions, []

    def counted(*args: Any, **kwargs: Any) -> AsyncSession:
        opened.append(asyncio.current_task())  # the request runs in this task (ASGITransport)
        return sessions(*args, **kwargs)

    monkeypatch.setattr(platform.runtime, "_sessions", counted)
    held = await reserve(platform, spender, 2)
    assert held.status_code == 201 and held.json()["budget_ids"] == [budget["id"]]
    assert asyncio.current_task() not in opened
    assert (await read_budget(platform, h, budget["id"]))["reserved"] == 3


async def test_concurrent_reservations_never_overrun(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=10)
    answers = await asyncio.gather(*(reserve(platform, spender, 1.0, user_id=f"u{i}") for i in range(50)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(201) == 10 and statuses.count(402) == 40
    assert (await read_budget(platform, h, budget["id"]))["reserved"] == 10


async def test_expired_reservations_release_their_hold(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=1)
    first = await reserve(platform, spender, 1, ttl_seconds=1)
    assert first.status_code == 201
    assert (await reserve(platform, spender, 1)).status_code == 402

    async def released() -> bool:
        return (await read_budget(platform, h, budget["id"]))["reserved"] == 0

    await wait_until(released, what="the lapsed hold to be released")
    again = await reserve(platform, spender, 1)
    assert again.status_code == 201, again.text
    lapsed = await read_reservation(platform, spender, first.json()["reservation_id"])
    assert lapsed.json()["status"] == "expired"
    # The work behind an expired reservation still happened: its settle is recorded.
    late = await settle(platform, spender, first.json()["reservation_id"], 0.25)
    assert late.status_code == 200 and late.json()["status"] == "settled"
    state = await read_budget(platform, h, budget["id"])
    assert (state["spent"], state["reserved"]) == (0.25, 1)


async def test_settle_is_idempotent(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=10)
    reservation = (await reserve(platform, spender, 3)).json()["reservation_id"]

    first = await settle(platform, spender, reservation, 2)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "settled" and first.json()["actual"] == 2
    second = await settle(platform, spender, reservation, 5)
    assert second.json() == first.json()
    twice = await asyncio.gather(*(settle(platform, spender, reservation, 7) for _ in range(5)))
    assert all(r.json() == first.json() for r in twice)

    state = await read_budget(platform, h, budget["id"])
    assert (state["spent"], state["reserved"], state["remaining"]) == (2, 0, 8)
    released = await release(platform, spender, reservation)
    assert released.status_code == 409 and released.json()["type"].endswith("/reservation-closed")
    assert (await reserve(platform, spender, 8)).status_code == 201
    assert (await reserve(platform, spender, 0.000001)).status_code == 402


async def test_release_gives_the_amount_back(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=5)
    reservation = (await reserve(platform, spender, 5)).json()["reservation_id"]
    assert (await reserve(platform, spender, 1)).status_code == 402
    for _ in range(2):
        assert (await release(platform, spender, reservation)).status_code == 204
    state = await read_budget(platform, h, budget["id"])
    assert (state["spent"], state["reserved"]) == (0, 0)
    read = await read_reservation(platform, spender, reservation)
    assert read.json()["status"] == "released" and read.json()["closed_at"]
    closed = await settle(platform, spender, reservation, 1)
    assert closed.status_code == 409 and closed.json()["type"].endswith("/reservation-closed")
    assert (await reserve(platform, spender, 5)).status_code == 201


async def test_token_budgets_count_whole_tokens(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, metric="tokens", limit=1000, scope="user", scope_id="u1")
    held = await reserve(platform, spender, 600, metric="tokens")
    assert held.status_code == 201 and held.json()["budget_ids"] == [budget["id"]]
    assert (await reserve(platform, spender, 500, metric="tokens")).status_code == 402
    assert (await reserve(platform, spender, 500)).status_code == 201  # dollars: no dollar budget here
    settled = await settle(platform, spender, held.json()["reservation_id"], 750)
    assert settled.json()["actual"] == 750
    state = await read_budget(platform, h, budget["id"])
    assert (state["spent"], state["reserved"], state["remaining"]) == (750, 0, 250)


async def test_spend_survives_a_redis_flush(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=10)
    reservation = (await reserve(platform, spender, 6)).json()["reservation_id"]
    assert (await settle(platform, spender, reservation, 6)).status_code == 200

    assert platform.runtime.cache is not None
    await platform.runtime.cache.flushall()

    assert (await read_budget(platform, h, budget["id"]))["spent"] == 6
    refused = await reserve(platform, spender, 5)
    assert refused.status_code == 402 and refused.json()["budget"]["spent"] == 6  # reseeded from Postgres
    assert (await reserve(platform, spender, 4)).status_code == 201
    keys = [k async for k in platform.runtime.cache.scan_iter(match=f"usage:{{{org}}}:*")]
    ttls = [await platform.runtime.cache.ttl(k) for k in keys]
    assert ttls and all(ttl > 0 for ttl in ttls)


async def test_raising_a_limit_applies_to_the_next_reservation(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=1)
    assert (await reserve(platform, spender, 2)).status_code == 402
    await platform.client.patch(f"{API}/budgets/{budget['id']}", json={"limit": 2}, headers=h)
    assert (await reserve(platform, spender, 2)).status_code == 201


async def test_a_budget_written_elsewhere_applies_to_the_next_reservation(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    """Holds use the budgets this process read last; a budget write on any replica changes the org's
    budgets version in Redis, and the next hold reads them again."""
    h = signer.headers(org)
    assert (await reserve(platform, spender, 5)).status_code == 201  # no budget yet: read and kept
    await create_budget(platform, h, limit=1)
    refused = await reserve(platform, spender, 5)
    assert refused.status_code == 402, refused.text
    assert platform.runtime.cache is not None
    await holds.budgets_changed(platform.runtime.cache, org)  # as another replica's write would
    assert (await reserve(platform, spender, 1)).status_code == 201
    assert (await reserve(platform, spender, 0.5)).status_code == 402


async def test_budgets_are_gauges_of_spend_and_remaining(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    """Each budget's settled spend (PostgreSQL) and what it leaves net of holds (Redis), as scraped."""
    h = signer.headers(org, perms=["usage:read", "usage:admin"])
    budget = await create_budget(platform, h, limit=10)
    user = await create_budget(platform, h, scope="user", scope_id="u1", limit=20, period="day")
    settled = (await reserve(platform, spender, 3)).json()["reservation_id"]
    assert (await settle(platform, spender, settled, 2)).status_code == 200
    assert (await reserve(platform, spender, 1)).status_code == 201  # held, not settled

    async def gauges(of: dict[str, object]) -> tuple[float, float]:
        labels = {"budget": str(of["id"]), "org": org, "scope": str(of["scope"]), "metric": "cost_usd"}
        return (
            await sample(platform, "usage_budget_spent", **labels),
            await sample(platform, "usage_budget_remaining", **labels),
        )

    assert await gauges(budget) == (2, 7)
    assert await gauges(user) == (2, 17)
    assert (await platform.client.delete(f"{API}/budgets/{budget['id']}", headers=h)).status_code == 204
    assert await gauges(budget) == (0, 0)  # a deleted budget's series is gone
