"""`ai.request.completed` from the bus: stored once however often delivered, and charged to budgets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from coder.services.usage.handlers import on_ai_requests_completed
from coder.services.usage.holds import record_key
from coder.services.usage.models import Event, Reservation
from coder.services.usage.reservations import LOST_AFTER_SECONDS, Reserver, write_lost_rows
from coder.shared.events import CloudEvent, EventContext
from coder.tests.services.usage.factories import (
    completed,
    create_budget,
    create_meter,
    query,
    read_budget,
    read_reservation,
    reserve,
    settle,
)
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner


async def publish(p: Platform, *events: CloudEvent) -> None:
    assert p.runtime.bus is not None
    await p.runtime.bus.publish(list(events))


async def spent(p: Platform, h: dict[str, str], budget: dict[str, Any]) -> float:
    value: float = (await read_budget(p, h, budget["id"]))["spent"]
    return value


async def test_bus_events_are_stored_once(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    budget = await create_budget(platform, h, limit=100)
    requests = await create_meter(platform, h, aggregation="count", value_property=None)
    first = completed(org, cost_usd=1.5, prompt_tokens=10, completion_tokens=5, team_id="t1", feature="chat")
    await publish(platform, first, first)
    await wait_until(lambda: spent(platform, h, budget), what="the event's cost to be charged")

    # A later event is handled after the duplicate was delivered (and skipped).
    marker = completed(org, cost_usd=0.25)
    await publish(platform, first, marker)
    await wait_until(lambda: _charged(platform, h, budget, 1.75), what="the marker event")

    result = (await query(platform, h, requests["slug"], group_by="model")).json()["data"]
    assert [(r["value"], r["group"]) for r in result] == [(2.0, {"model": "gpt-4o"})]
    async with platform.runtime.sessions() as session:
        stored = await session.get(Event, (org, "/coder/ai", first.id))
        copies = await session.scalar(select(func.count()).where(Event.event_id == first.id))
    assert copies == 1 and stored is not None
    assert (stored.user_id, stored.team_id, stored.model, stored.feature) == ("u1", "t1", "gpt-4o", "chat")
    assert stored.data["cost_usd"] == 1.5 and stored.type == "ai.request.completed"
    assert stored.time == first.time
    assert await spent(platform, h, budget) == 1.75


async def _charged(p: Platform, h: dict[str, str], budget: dict[str, Any], amount: float) -> bool:
    return await spent(p, h, budget) == amount


async def test_an_event_settles_its_reservation(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    dollars = await create_budget(platform, h, limit=10)
    tokens = await create_budget(platform, h, metric="tokens", limit=10_000, scope="user", scope_id="u1")
    reservation = (await reserve(platform, spender, 5)).json()["reservation_id"]

    await publish(
        platform,
        completed(org, reservation_id=reservation, cost_usd=3, prompt_tokens=100, completion_tokens=50),
    )
    await wait_until(lambda: _charged(platform, h, tokens, 150), what="the tokens to be charged")

    read = (await read_reservation(platform, spender, reservation)).json()
    assert (read["status"], read["actual"]) == ("settled", 3)
    state = await read_budget(platform, h, dollars["id"])
    assert (state["spent"], state["reserved"]) == (3, 0)
    # Settling over HTTP afterwards is the idempotent replay of that settle.
    again = await settle(platform, spender, reservation, 4)
    assert again.json()["actual"] == 3
    assert await spent(platform, h, dollars) == 3


async def test_an_event_after_an_http_settle_is_not_counted_twice(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    dollars = await create_budget(platform, h, limit=10)
    tokens = await create_budget(platform, h, metric="tokens", limit=10_000)
    reservation = (await reserve(platform, spender, 5)).json()["reservation_id"]
    assert (await settle(platform, spender, reservation, 2)).status_code == 200

    await publish(platform, completed(org, reservation_id=reservation, cost_usd=3, prompt_tokens=40))
    await wait_until(lambda: _charged(platform, h, tokens, 40), what="the tokens to be charged")
    assert await spent(platform, h, dollars) == 2


async def test_an_event_without_a_reservation_is_charged_directly(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    team = await create_budget(platform, h, scope="team", scope_id="t1", limit=2)
    await publish(platform, completed(org, team_id="t1", cost_usd=1.25))
    await wait_until(lambda: _charged(platform, h, team, 1.25), what="the cost to be charged")
    refused = await reserve(platform, spender, 1, team_id="t1")
    assert refused.status_code == 402 and refused.json()["budget"]["spent"] == 1.25
    assert (await reserve(platform, spender, 0.75, team_id="t1")).status_code == 201


async def test_a_reservation_of_another_org_is_not_touched(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    h = signer.headers(org)
    mine = await create_budget(platform, h, limit=10)
    reservation = (await reserve(platform, spender, 4)).json()["reservation_id"]

    other = "org-other-" + org[-8:]
    theirs_h = signer.headers(other)
    theirs = await create_budget(platform, theirs_h, limit=10)
    await publish(platform, completed(other, reservation_id=reservation, cost_usd=1))
    await wait_until(lambda: _charged(platform, theirs_h, theirs, 1), what="the other org's charge")

    read = (await read_reservation(platform, spender, reservation)).json()
    assert read["status"] == "reserved"
    state = await read_budget(platform, h, mine["id"])
    assert (state["spent"], state["reserved"]) == (0, 4)


async def test_a_reservation_whose_row_postgres_lacks_settles_from_redis(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    """A hold answers before its row reaches Postgres; a replica that stopped before writing it
    leaves the row only in Redis, with the hold: the settling event still finds and settles it."""
    h = signer.headers(org)
    dollars = await create_budget(platform, h, limit=10)
    reservation = (await reserve(platform, spender, 5)).json()["reservation_id"]

    async def written() -> bool:
        async with platform.runtime.sessions() as session:
            return await session.get(Reservation, uuid.UUID(reservation)) is not None

    await wait_until(written, what="the writer to write the row")
    async with platform.runtime.sessions() as session, session.begin():
        await session.execute(delete(Reservation).where(Reservation.id == uuid.UUID(reservation)))

    await publish(platform, completed(org, reservation_id=reservation, cost_usd=3))
    await wait_until(lambda: _charged(platform, h, dollars, 3), what="the reservation to be settled")
    state = await read_budget(platform, h, dollars["id"])
    assert (state["spent"], state["reserved"]) == (3, 0)  # settled through its hold, not charged beside it
    read = (await read_reservation(platform, spender, reservation)).json()
    assert (read["status"], read["actual"], read["budget_ids"]) == ("settled", 3, [dollars["id"]])


async def test_a_hold_whose_replica_stopped_before_writing_its_row_still_leaves_a_row(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row goes to Postgres after the hold answered: a replica that stopped in between leaves it in
    Redis only, until the hold's record lapses. The sweeper writes it first, so the reservation still
    reads (as expired, never settled) once Redis has forgotten it."""
    h = signer.headers(org)
    dollars = await create_budget(platform, h, limit=10)
    reserver: Reserver = platform.runtime.local_apps["usage"].state.usage  # type: ignore[attr-defined]
    with monkeypatch.context() as stopping:
        stopping.setattr(reserver.writer, "add", lambda row: None)  # the replica stops before writing
        held = await reserve(platform, spender, 4, ttl_seconds=1)
    assert held.status_code == 201, held.text
    reservation = uuid.UUID(held.json()["reservation_id"])
    sessions, cache = platform.runtime.sessions, platform.runtime.cache
    assert cache is not None

    async def row() -> Reservation | None:
        async with sessions() as session:
            return await session.get(Reservation, reservation)

    # Within LOST_AFTER_SECONDS the writer may still be on its way: the sweeper leaves the row to it.
    await write_lost_rows(sessions, cache)
    assert await row() is None
    later = datetime.now(UTC) + timedelta(seconds=LOST_AFTER_SECONDS)
    assert await write_lost_rows(sessions, cache, now=later) >= 1
    assert await write_lost_rows(sessions, cache, now=later) == 0  # written once
    await cache.delete(record_key(org, reservation))  # the hold's record lapses

    async def expired() -> dict[str, Any] | None:
        answer = await read_reservation(platform, spender, str(reservation))
        assert answer.status_code == 200, answer.text
        read: dict[str, Any] = answer.json()
        return read if read["status"] == "expired" else None

    read = await wait_until(expired, what="the reservation's expiry")
    assert (read["amount"], read["budget_ids"], read["closed_at"]) == (4, [dollars["id"]], None)
    state = await read_budget(platform, h, dollars["id"])
    assert (state["spent"], state["reserved"]) == (0, 0)


async def test_a_batch_settles_as_its_events_one_by_one_would(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    """Deliveries handled together (`consume_batch`) settle their open reservations in one UPDATE and
    charge the ledgers in one statement; the result is what handling them in turn gives: a second
    event naming a settled reservation counts its tokens only, one naming a reservation settled over
    HTTP the same, one naming a row Postgres lacks settles from Redis, one naming none is charged."""
    h = signer.headers(org)
    dollars = await create_budget(platform, h, limit=100)
    tokens = await create_budget(platform, h, metric="tokens", limit=10_000, scope="user", scope_id="u1")
    held = [(await reserve(platform, spender, 5)).json()["reservation_id"] for _ in range(4)]
    one, two, closed, unwritten = held
    assert (await settle(platform, spender, closed, 2)).status_code == 200
    reserver: Reserver = platform.runtime.local_apps["usage"].state.usage  # type: ignore[attr-defined]
    await reserver.writer.flush()
    async with platform.runtime.sessions() as session, session.begin():
        await session.execute(delete(Reservation).where(Reservation.id == uuid.UUID(unwritten)))
    other = "org-other-" + org[-8:]
    theirs = await create_budget(platform, signer.headers(other), limit=10)

    batch = [
        completed(org, reservation_id=one, cost_usd=1, prompt_tokens=10),
        completed(org, reservation_id=two, cost_usd=2, prompt_tokens=20),
        completed(org, reservation_id=two, cost_usd=2, prompt_tokens=20),
        completed(org, reservation_id=closed, cost_usd=3, prompt_tokens=30),
        completed(org, reservation_id=unwritten, cost_usd=0.25, completion_tokens=4),
        completed(org, cost_usd=0.5, completion_tokens=5),
        completed(other, cost_usd=1),
    ]
    async with platform.runtime.sessions() as session, session.begin():
        await on_ai_requests_completed(batch, EventContext(session=session, cache=platform.runtime.cache))

    state = await read_budget(platform, h, dollars["id"])
    assert (state["spent"], state["reserved"]) == (2 + 1 + 2 + 0.25 + 0.5, 0)
    assert await spent(platform, h, tokens) == 10 + 20 + 20 + 30 + 4 + 5
    assert await spent(platform, signer.headers(other), theirs) == 1
    actual = {r: (await read_reservation(platform, spender, r)).json() for r in held}
    assert [(a["status"], a["actual"]) for a in actual.values()] == [
        ("settled", 1),
        ("settled", 2),
        ("settled", 2),
        ("settled", 0.25),
    ]
    async with platform.runtime.sessions() as session:
        stored = await session.scalar(select(func.count()).where(Event.org_id == org))
    assert stored == 6
