"""Reservations: hold an amount against every budget that covers it, then settle or release it.

A hold touches Redis only (one script run): the budgets that apply are kept per process while the
org's budgets version in Redis stands (the script checks it), and the reservation's row goes to
Redis with the hold, then to Postgres in batches (`RowWriter`). Whatever reads a reservation
(settle, release, read, the settling event) writes the row from Redis first if Postgres lacks it,
so a row the writer had not written yet is never missed while its hold lives; and a sweeper writes
the rows a stopped replica's writer never wrote, before their records leave Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Uuid, bindparam, case, column, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import BindParameter

from coder.services.usage import holds
from coder.services.usage.budgets import (
    applicable,
    charge,
    charge_ledger,
    charge_ledgers,
    checked_units,
    exact,
    keys_of,
    ledger,
    period_bounds,
)
from coder.services.usage.holds import BudgetKeys, Check, Held, Stale, from_units, to_units
from coder.services.usage.models import AMOUNT, Base, Budget, Reservation
from coder.services.usage.schemas import (
    Metric,
    Period,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
)
from coder.shared.db import transaction
from coder.shared.errors import NotFound, Problem
from coder.shared.repository import OrgScoped, owned_by
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

# A process keeps the budgets applying to a caller this long at most, unless the org's budgets
# version changes first (then the next hold reads them again).
BUDGETS_CACHE_SECONDS = 30.0
BUDGETS_CACHE_SIZE = 10_000
# Rows per INSERT when the writer catches up (asyncpg takes at most 32767 parameters).
WRITE_BATCH = 1000
WRITE_RETRY_SECONDS = 1.0
# The writer waits this long after a hold before writing: the hold's call is under way then (a model
# call's first token is due), and the holds taken meanwhile join the same INSERT.
WRITE_LINGER_SECONDS = 0.05
# A hold whose row Postgres still lacks this long after it was taken lost its writer (its replica
# stopped): the sweeper writes it from Redis. It runs this often, well within the time a hold's record
# outlives its hold (holds.HOLD_TTL_MARGIN_SECONDS), on one replica at a time.
LOST_AFTER_SECONDS = 10.0
SWEEP_SECONDS = 20.0
SWEEP_LOCK = "usage.reservations.sweep-lock"


class UsageProblem(Problem):
    slug, title = "usage", "Usage error"


class BudgetExceeded(UsageProblem):
    status, slug, title = 402, "budget-exceeded", "Budget exceeded"
    commit = True  # the refusal's `usage.budget.exceeded` event commits with the answer


class ReservationClosed(UsageProblem):
    status, slug, title = 409, "reservation-closed", "Reservation already closed"


def _now() -> datetime:
    return datetime.now(UTC)


# --- reservations ---


def reservation_read(reservation: Reservation, now: datetime | None = None) -> ReservationRead:
    status = ReservationStatus(reservation.status)
    if status is ReservationStatus.RESERVED and reservation.expires_at <= (now or _now()):
        status = ReservationStatus.EXPIRED
    return ReservationRead(
        reservation_id=reservation.id,
        status=status,
        metric=Metric(reservation.metric),
        amount=reservation.amount,
        actual=reservation.actual,
        user_id=reservation.user_id,
        team_id=reservation.team_id,
        api_key_id=reservation.api_key_id,
        budget_ids=[uuid.UUID(b) for b in reservation.budget_ids],
        created_at=reservation.created_at,
        expires_at=reservation.expires_at,
        closed_at=reservation.closed_at,
    )


BudgetsKey = tuple[str, Metric, str | None, str | None, str | None]


class RowWriter:
    """Writes reservation rows to Postgres after their hold answered: whatever arrives while one
    INSERT runs goes in the next, so rows are written in batches however many holds run at once. A
    failed write is tried again; rows still waiting at stop are written then."""

    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self._sessions = sessions  # looked up at the write: set up before the process opens its database
        self._rows: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(WRITE_LINGER_SECONDS)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing reservation rows failed; trying again")
                await asyncio.sleep(WRITE_RETRY_SECONDS)
                self._wake.set()

    async def flush(self) -> None:
        while self._rows:
            rows = self._rows[:WRITE_BATCH]
            async with transaction(self._sessions()) as session:
                await write_rows(session, rows)
            del self._rows[: len(rows)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


async def write_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of reservations; one already written (by the writer or a reader) stays as it is. The rows
    are the statement's parameters, not its text: compiled once, whatever the batch's size."""
    await session.execute(insert(Reservation).on_conflict_do_nothing(index_elements=["id"]), list(rows))


async def write_lost_rows(
    sessions: async_sessionmaker[AsyncSession], cache: Redis, now: datetime | None = None
) -> int:
    """Write the rows of holds that Redis has and Postgres lacks LOST_AFTER_SECONDS after they were
    taken, as they were held (one whose expiry has passed reads as expired): a replica stopped before
    its writer wrote them. Returns how many were written."""
    moment = now or _now()
    held = [_row_from_json(row) | {"expires_at": expires} for row, expires in await holds.records(cache)]
    old = [r for r in held if moment - r["created_at"] >= timedelta(seconds=LOST_AFTER_SECONDS)]
    if not old:
        return 0
    async with transaction(sessions) as session:
        ids = [r["id"] for r in old]
        written = set(
            (await session.execute(select(Reservation.id).where(Reservation.id.in_(ids)))).scalars()
        )
        lost = [r for r in old if r["id"] not in written]
        if lost:
            await write_rows(session, lost)
    if lost:
        log.warning("wrote reservation rows a stopped replica had not written", extra={"rows": len(lost)})
    return len(lost)


async def sweeper(runtime: Runtime) -> None:
    """The background task: `write_lost_rows` every SWEEP_SECONDS, on whichever replica gets it."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        cache = runtime.cache
        try:
            if cache is not None and await cache.set(SWEEP_LOCK, "1", px=int(SWEEP_SECONDS * 900), nx=True):
                await write_lost_rows(runtime.sessions, cache)
        except Exception:
            log.exception("writing lost reservation rows failed; trying again at the next sweep")


class Reserver:
    """What holds keep per process: the budgets applying to each caller, and the row writer."""

    def __init__(self, sessions: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self.writer = RowWriter(sessions)
        self._budgets: dict[BudgetsKey, tuple[str, float, list[Budget]]] = {}

    async def budgets(
        self, session: AsyncSession, cache: Redis, key: BudgetsKey, *, fresh: bool = False
    ) -> tuple[str, list[Budget]]:
        """The budgets applying to `key`, and the org's budgets version they were read at."""
        now = time.monotonic()
        cached = self._budgets.get(key)
        if cached is not None and not fresh and cached[1] > now:
            return cached[0], cached[2]
        org_id, metric, user_id, team_id, api_key_id = key
        # The version first: a budget written after this read changes it, so the hold sees it stale.
        version = await holds.budgets_version(cache, org_id)
        found = await applicable(session, org_id, metric, user_id, team_id, api_key_id)
        if len(self._budgets) >= BUDGETS_CACHE_SIZE:
            self._budgets.clear()
        self._budgets[key] = (version, now + BUDGETS_CACHE_SECONDS, found)
        return version, found

    async def close(self) -> None:
        await self.writer.close()


def _row_json(row: dict[str, Any]) -> str:
    return json.dumps({k: v if v is None or isinstance(v, list) else str(v) for k, v in row.items()})


def _row_from_json(text: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(text)
    row["id"] = uuid.UUID(row["id"])
    row["amount"] = Decimal(row["amount"])
    for name in ("created_at", "expires_at"):
        row[name] = datetime.fromisoformat(row[name])
    return row


async def reserve(
    session: AsyncSession, cache: Redis, reserver: Reserver, org_id: str, body: ReservationCreate
) -> ReservationRead:
    """Hold `amount` against every budget that covers the caller, or refuse (BudgetExceeded) naming the
    budget it would overrun."""
    metric = body.metric
    amount = checked_units(metric, body.amount, "amount")
    now = _now()
    reservation_id = uuid.uuid4()
    key: BudgetsKey = (org_id, metric, body.user_id, body.team_id, body.api_key_id)
    for attempt in range(3):
        version, budgets = await reserver.budgets(session, cache, key, fresh=attempt > 0)
        row: dict[str, Any] = {
            "id": reservation_id,
            "org_id": org_id,
            "metric": metric.value,
            "amount": body.amount,
            "actual": None,
            "user_id": body.user_id,
            "team_id": body.team_id,
            "api_key_id": body.api_key_id,
            "budget_ids": [str(b.id) for b in budgets],
            "status": ReservationStatus.RESERVED.value,
            "created_at": now,
            "expires_at": now + timedelta(seconds=body.ttl_seconds),  # Redis's clock decides below
            "closed_at": None,
        }
        checks = [
            Check(keys_of(b), period_bounds(Period(b.period), now)[0], to_units(metric, b.limit))
            for b in budgets
        ]

        async def load_spent(indexes: Sequence[int]) -> list[int]:
            wanted = [(budgets[i].id, checks[i].period_start) for i in indexes]  # noqa: B023 - used here
            return [to_units(metric, s) for s in await ledger(session, wanted)]

        outcome = await holds.reserve(
            cache,
            org_id,
            version,
            reservation_id,
            _row_json(row),
            checks,
            amount,
            body.ttl_seconds,
            load_spent,
        )
        if isinstance(outcome, Stale):
            continue
        if not isinstance(outcome, Held):
            raise await _refuse(
                session,
                org_id,
                body,
                budgets[outcome.index],
                from_units(metric, outcome.spent),
                from_units(metric, outcome.reserved),
                now,
            )
        # The row is in Redis with the hold; Postgres gets it in the writer's next batch.
        row["expires_at"] = outcome.expires_at
        reserver.writer.add(row)
        return reservation_read(Reservation(**row), now)
    raise RuntimeError("the org's budgets kept changing during a reservation")


async def _refuse(
    session: AsyncSession,
    org_id: str,
    body: ReservationCreate,
    budget: Budget,
    spent: Decimal,
    reserved: Decimal,
    now: datetime,
) -> BudgetExceeded:
    start, _ = period_bounds(Period(budget.period), now)
    details: dict[str, Any] = {
        "id": str(budget.id),
        "name": budget.name,
        "scope": budget.scope,
        "scope_id": budget.scope_id,
        "metric": budget.metric,
        "period": budget.period,
        "period_start": start.isoformat(),
        "limit": float(budget.limit),
        "spent": float(spent),
        "reserved": float(reserved),
        "requested": float(body.amount),
    }
    await Base.events.publish(
        session,
        "usage.budget.exceeded",
        {
            **details,
            "user_id": body.user_id,
            "team_id": body.team_id,
            "api_key_id": body.api_key_id,
        },
        org_id=org_id,
        subject=str(budget.id),
    )
    scope = budget.scope if budget.scope_id is None else f"{budget.scope} {budget.scope_id}"
    return BudgetExceeded(
        f"budget {budget.name!r} ({scope}) would be exceeded: limit {details['limit']}, spent "
        f"{details['spent']}, reserved {details['reserved']}, requested {details['requested']}",
        budget=details,
    )


def _reservations(session: AsyncSession, org_id: str) -> OrgScoped[Reservation]:
    return OrgScoped(Reservation, session, org_id, "reservation")


async def find(
    session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID, *, lock: bool = False
) -> Reservation | None:
    """The reservation's row, written from Redis first if the writer has not written it yet. `lock`:
    concurrent settles and releases of one reservation take turns (a row lock), so only one acts."""
    rows = _reservations(session, org_id)
    found = await rows.find(Reservation.id == reservation_id, lock=lock)
    if found is not None:
        return found
    held = await holds.record(cache, org_id, reservation_id)
    if held is None:
        return None
    row = _row_from_json(held[0])
    if row["org_id"] != org_id:
        return None
    await write_rows(session, [{**row, "expires_at": held[1]}])
    return await rows.find(Reservation.id == reservation_id, lock=lock)


async def get_reservation(
    session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID, *, lock: bool = False
) -> Reservation:
    found = await find(session, cache, org_id, reservation_id, lock=lock)
    if found is None:
        raise NotFound(f"no reservation {reservation_id}")
    return found


async def settle_open(
    session: AsyncSession,
    cache: Redis,
    reservation: Reservation,
    actual: Decimal,
    budgets: Sequence[Budget] | None = None,
) -> None:
    """Settle an open reservation: its holds released, `actual` charged to the budgets of its metric
    that cover it (`budgets`, read when not given)."""
    metric = Metric(reservation.metric)
    if budgets is None:
        budgets = await applicable(
            session,
            reservation.org_id,
            metric,
            reservation.user_id,
            reservation.team_id,
            reservation.api_key_id,
        )
    reservation.status = ReservationStatus.SETTLED.value
    reservation.actual = exact(metric, actual)
    reservation.closed_at = _now()
    await _release_and_charge(session, cache, reservation, budgets)
    await session.flush()


async def _release_and_charge(
    session: AsyncSession, cache: Redis, reservation: Reservation, budgets: Sequence[Budget]
) -> None:
    """A settled reservation's holds dropped and its actual charged, in Redis in one step."""
    assert reservation.actual is not None
    assert reservation.closed_at is not None
    metric = Metric(reservation.metric)
    charges = await charge_ledger(session, metric, budgets, reservation.actual, reservation.closed_at)
    release = [BudgetKeys(reservation.org_id, uuid.UUID(b)) for b in reservation.budget_ids]
    await holds.settle(cache, reservation.id, release, charges)


async def settle_spent(
    session: AsyncSession,
    cache: Redis,
    org_id: str,
    reservation_id: uuid.UUID,
    spend: dict[Metric, Decimal],
    spender: tuple[str, str | None, str | None],
    budgets: Sequence[Budget],
) -> Metric | None:
    """Settle the reservation a spend names with the spend of its metric. `budgets`: every budget
    covering `spender` (user, team, API key), of any metric. Returns the metric whose spend the
    reservation counts (settled now or before), None when it counts none (unknown, or released).

    An open reservation is settled by one UPDATE (its row lock makes a concurrent settle or release
    wait, then find it closed); the rest (closed, or its row not in Postgres yet) goes through `find`."""

    def covering(reservation: Reservation) -> list[Budget] | None:
        if (reservation.user_id, reservation.team_id, reservation.api_key_id) != spender:
            return None  # reserved for someone else: read the budgets covering them
        return [b for b in budgets if b.metric == reservation.metric]

    actual = case(*((Reservation.metric == m.value, exact(m, amount)) for m, amount in spend.items()))
    settled = (
        await session.execute(
            update(Reservation)
            .where(
                owned_by(Reservation, org_id),
                Reservation.id == reservation_id,
                Reservation.status == ReservationStatus.RESERVED.value,
            )
            .values(status=ReservationStatus.SETTLED.value, actual=actual, closed_at=_now())
            .returning(Reservation)
        )
    ).scalar_one_or_none()
    if settled is not None:
        metric = Metric(settled.metric)
        found = covering(settled)
        if found is None:
            found = await applicable(
                session, org_id, metric, settled.user_id, settled.team_id, settled.api_key_id
            )
        await _release_and_charge(session, cache, settled, found)
        return metric
    reservation = await find(session, cache, org_id, reservation_id, lock=True)
    if reservation is None:
        log.warning(
            "a spend names an unknown reservation; charging directly",
            extra={"reservation_id": str(reservation_id)},
        )
        return None
    metric = Metric(reservation.metric)
    if reservation.status == ReservationStatus.RELEASED.value:
        return None
    if reservation.status == ReservationStatus.RESERVED.value:
        await settle_open(session, cache, reservation, spend[metric], covering(reservation))
    return metric


Spender = tuple[str, str | None, str | None]  # user, team, API key


@dataclass(frozen=True)
class Spend:
    """What one call spent, of every metric, and the reservation it names (if any)."""

    spender: Spender
    amounts: dict[Metric, Decimal]
    reservation_id: uuid.UUID | None = None


async def settle_batch(session: AsyncSession, cache: Redis, org_id: str, spends: Sequence[Spend]) -> None:
    """Charge the spends of one org to its budgets: through the reservation a spend names when it is
    still open (settled with the spend of its metric, the rest charged directly), directly otherwise.
    The open reservations are settled by one UPDATE, the budgets' ledgers charged by one statement and
    Redis told in one step (holds dropped, counters raised); a spend whose reservation is not open in
    Postgres (closed, unknown, or its row not written yet) goes through `settle_spent` on its own."""
    now = _now()
    covering: dict[Spender, list[Budget]] = {}

    async def budgets_of(spender: Spender) -> list[Budget]:
        if spender not in covering:  # every budget covering the spender, of either metric
            covering[spender] = await applicable(session, org_id, None, *spender)
        return covering[spender]

    first = {s.reservation_id: s for s in reversed(spends) if s.reservation_id is not None}
    settled: dict[uuid.UUID, Reservation] = {}
    if first:
        metrics = list(Metric)
        # unnest of one array per column: the statement is the same whatever the batch's size, so it
        # is compiled once (a VALUES list is compiled again for every batch).
        amounts = {m: [exact(m, s.amounts.get(m, Decimal(0))) for s in first.values()] for m in metrics}
        arrays: list[BindParameter[Any]] = [bindparam("ids", list(first), type_=ARRAY(Uuid()))]
        arrays += [bindparam(m.value, amounts[m], type_=ARRAY(AMOUNT)) for m in metrics]
        spent = (
            func.unnest(*arrays)
            .table_valued(column("id", Uuid()), *(column(m.value, AMOUNT) for m in metrics))
            .render_derived(name="spent")
        )
        actual = case(*((Reservation.metric == m.value, spent.c[m.value]) for m in metrics))
        rows = await session.execute(
            update(Reservation)
            .where(
                owned_by(Reservation, org_id),
                Reservation.id == spent.c.id,
                Reservation.status == ReservationStatus.RESERVED.value,
            )
            .values(status=ReservationStatus.SETTLED.value, actual=actual, closed_at=now)
            .returning(Reservation)
        )
        settled = {r.id: r for r in rows.scalars()}
    charged: dict[uuid.UUID, tuple[Budget, Decimal]] = {}

    def add(budgets: Sequence[Budget], metric: Metric, amount: Decimal) -> None:
        for b in budgets:
            if b.metric == metric.value:
                charged[b.id] = (b, charged.get(b.id, (b, Decimal(0)))[1] + amount)

    releases: list[tuple[uuid.UUID | None, Sequence[BudgetKeys]]] = []
    alone: list[Spend] = []
    for s in spends:
        reservation = settled.pop(s.reservation_id, None) if s.reservation_id is not None else None
        if s.reservation_id is not None and reservation is None:
            alone.append(s)
            continue
        counted = None
        if reservation is not None:
            assert reservation.actual is not None
            counted = Metric(reservation.metric)
            owner = (reservation.user_id, reservation.team_id, reservation.api_key_id)
            add(await budgets_of(owner), counted, reservation.actual)
            releases.append(
                (reservation.id, [BudgetKeys(org_id, uuid.UUID(b)) for b in reservation.budget_ids])
            )
        for metric, amount in s.amounts.items():
            if metric is not counted:
                add(await budgets_of(s.spender), metric, exact(metric, amount))
    charges = await charge_ledgers(session, list(charged.values()), now)
    await holds.settle_many(cache, releases, charges)
    for s in alone:
        assert s.reservation_id is not None
        budgets = await budgets_of(s.spender)
        counted = await settle_spent(session, cache, org_id, s.reservation_id, s.amounts, s.spender, budgets)
        for metric, amount in s.amounts.items():
            if metric is not counted:
                await charge(session, cache, metric, [b for b in budgets if b.metric == metric.value], amount)


async def settle(
    session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID, actual: Decimal
) -> ReservationRead:
    """Release the hold and record `actual` as spend. Settling again returns the first result."""
    reservation = await get_reservation(session, cache, org_id, reservation_id, lock=True)
    if reservation.status == ReservationStatus.RELEASED.value:
        raise ReservationClosed(
            f"reservation {reservation_id} was released; it cannot be settled",
            status_now=ReservationStatus.RELEASED.value,
        )
    if reservation.status == ReservationStatus.RESERVED.value:
        checked_units(Metric(reservation.metric), actual, "actual")
        await settle_open(session, cache, reservation, actual)
    return reservation_read(reservation)


async def release(session: AsyncSession, cache: Redis, org_id: str, reservation_id: uuid.UUID) -> None:
    """Give the held amount back without spending it. Releasing again changes nothing."""
    reservation = await get_reservation(session, cache, org_id, reservation_id, lock=True)
    if reservation.status == ReservationStatus.SETTLED.value:
        raise ReservationClosed(
            f"reservation {reservation_id} was settled; it cannot be released",
            status_now=ReservationStatus.SETTLED.value,
        )
    if reservation.status == ReservationStatus.RESERVED.value:
        keys = [BudgetKeys(org_id, uuid.UUID(b)) for b in reservation.budget_ids]
        await holds.settle(cache, reservation.id, keys, [])
        reservation.status = ReservationStatus.RELEASED.value
        reservation.closed_at = _now()
        await session.flush()
