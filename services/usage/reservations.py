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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import DateTime, bindparam, case, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from coder.services.usage import holds
from coder.services.usage.budgets import (
    Limit,
    Spender,
    applicable,
    charge,
    charge_ledger,
    charge_ledgers,
    checked_units,
    covering,
    exact,
    keys_of,
    ledger,
    period_bounds,
)
from coder.services.usage.holds import BudgetKeys, Check, Held, Stale, from_units, to_units
from coder.services.usage.models import Base, Reservation
from coder.services.usage.schemas import (
    Metric,
    Period,
    ReservationCreate,
    ReservationRead,
    ReservationStatus,
)
from coder.shared.db import transaction
from coder.shared.errors import NotFound, Problem
from coder.shared.repository import OrgScoped, owned_by, owned_by_sql
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


BudgetsKey = tuple[str, Metric, str, str | None, str | None]


class RowWriter:
    """Writes reservation rows to Postgres after their hold answered: whatever arrives while one
    INSERT runs goes in the next, so rows are written in batches however many holds run at once. A
    failed write is tried again; rows still waiting at stop are written then."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime  # its engine is read at the write: opened after this is set up
        self._rows: list[tuple[str, datetime]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, row: tuple[str, datetime]) -> None:
        """`row`: the reservation's row as JSON, as Redis holds it (`_row_json`), and its expiry."""
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
        engine = self._runtime.engine
        if engine is None:
            raise RuntimeError("the database is not open in this process")
        while self._rows:
            rows = self._rows[:WRITE_BATCH]
            # One statement, atomic by itself: no transaction around it (BEGIN and COMMIT saved).
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await write_rows(connection, rows)
            del self._rows[: len(rows)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


# Reservation rows from their JSON as Redis holds it (`_row_json`), next to their expiries (Redis's
# clock decided them after the JSON was made): the rows go as one JSON document PostgreSQL unpacks,
# one statement text whatever the batch's size, and no value encoded one at a time in Python. A row
# already written (by the writer, a reader or the sweeper) stays as it is.
_COLUMNS = "id, org_id, metric, amount, actual, user_id, team_id, api_key_id, budget_ids, status, created_at"
_WRITE_ROWS = text(f"""
    INSERT INTO usage_reservation ({_COLUMNS}, closed_at, expires_at)
    SELECT {_COLUMNS}, closed_at, expires_at
    FROM ROWS FROM (
        jsonb_to_recordset(CAST(:rows AS jsonb)) AS (id uuid, org_id text, metric text, amount numeric,
            actual numeric, user_id text, team_id text, api_key_id text, budget_ids jsonb, status text,
            created_at timestamptz, closed_at timestamptz),
        unnest(CAST(:expires AS timestamptz[]))
    ) AS incoming ({_COLUMNS}, closed_at, expires_at)
    ON CONFLICT (id) DO NOTHING
""").bindparams(bindparam("expires", type_=ARRAY(DateTime(timezone=True))))  # noqa: S608  (constants only)


async def write_rows(db: AsyncSession | AsyncConnection, rows: Sequence[tuple[str, datetime]]) -> int:
    """Write reservations' rows (JSON, as Redis holds them) with their expiries; returns how many
    were not written yet."""
    if not rows:
        return 0
    parameters = {"rows": f"[{','.join(row for row, _ in rows)}]", "expires": [e for _, e in rows]}
    result = await db.execute(_WRITE_ROWS, parameters)
    return result.rowcount  # type: ignore[attr-defined]  # a CursorResult: INSERT's own count


def _created_at(row: str) -> datetime:
    return datetime.fromisoformat(json.loads(row)["created_at"])


async def write_lost_rows(
    sessions: async_sessionmaker[AsyncSession], cache: Redis, now: datetime | None = None
) -> int:
    """Write the rows of holds that Redis has and Postgres lacks LOST_AFTER_SECONDS after they were
    taken, as they were held (one whose expiry has passed reads as expired): a replica stopped before
    its writer wrote them. Returns how many were written."""
    moment = now or _now()
    lost_after = timedelta(seconds=LOST_AFTER_SECONDS)
    old = [
        (row, expires)
        for row, expires in await holds.records(cache)
        if moment - _created_at(row) >= lost_after
    ]
    if not old:
        return 0
    async with transaction(sessions) as session:
        lost = await write_rows(session, old)
    if lost:
        log.warning("wrote reservation rows a stopped replica had not written", extra={"rows": lost})
    return lost


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
    """What holds keep per process: the budgets applying to each caller, and the row writer. A hold
    whose budgets are known opens no database session."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer = RowWriter(runtime)
        self._budgets: dict[BudgetsKey, tuple[str, float, list[Limit]]] = {}

    async def budgets(self, cache: Redis, key: BudgetsKey, *, fresh: bool = False) -> tuple[str, list[Limit]]:
        """The budgets applying to `key`, and the org's budgets version they were read at."""
        now = time.monotonic()
        cached = self._budgets.get(key)
        if cached is not None and not fresh and cached[1] > now:
            return cached[0], cached[2]
        org_id, metric, user_id, team_id, api_key_id = key
        # The version first: a budget written after this read changes it, so the hold sees it stale.
        version = await holds.budgets_version(cache, org_id)
        async with self.runtime.sessions() as session:
            found = await applicable(session, org_id, metric, user_id, team_id, api_key_id)
        if len(self._budgets) >= BUDGETS_CACHE_SIZE:
            self._budgets.clear()
        self._budgets[key] = (version, now + BUDGETS_CACHE_SECONDS, found)
        return version, found

    async def close(self) -> None:
        await self.writer.close()


def _row_json(row: dict[str, Any]) -> str:
    return json.dumps({k: v if v is None or isinstance(v, list) else str(v) for k, v in row.items()})


async def reserve(reserver: Reserver, cache: Redis, org_id: str, body: ReservationCreate) -> ReservationRead:
    """Hold `amount` against every budget that covers the caller, or refuse (BudgetExceeded) naming the
    budget it would overrun. Postgres is read only for what the process does not know (the budgets
    applying, once in a while; a spend counter Redis lost), and written only for a refusal."""
    metric = body.metric
    amount = checked_units(metric, body.amount, "amount")
    now = _now()
    reservation_id = uuid.uuid4()
    key: BudgetsKey = (org_id, metric, body.user_id, body.team_id, body.api_key_id)
    for attempt in range(3):
        version, budgets = await reserver.budgets(cache, key, fresh=attempt > 0)
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
            async with reserver.runtime.sessions() as session:
                return [to_units(metric, s) for s in await ledger(session, wanted)]

        held = _row_json(row)
        outcome = await holds.reserve(
            cache, org_id, version, reservation_id, held, checks, amount, body.ttl_seconds, load_spent
        )
        if isinstance(outcome, Stale):
            continue
        if not isinstance(outcome, Held):
            raise await _refuse(
                reserver.runtime.sessions,
                org_id,
                body,
                budgets[outcome.index],
                from_units(metric, outcome.spent),
                from_units(metric, outcome.reserved),
                now,
            )
        # The row is in Redis with the hold; Postgres gets it in the writer's next batch.
        reserver.writer.add((held, outcome.expires_at))
        return ReservationRead(
            reservation_id=reservation_id,
            status=ReservationStatus.RESERVED,
            metric=metric,
            amount=body.amount,
            actual=None,
            user_id=body.user_id,
            team_id=body.team_id,
            api_key_id=body.api_key_id,
            budget_ids=[b.id for b in budgets],
            created_at=now,
            expires_at=outcome.expires_at,
            closed_at=None,
        )
    raise RuntimeError("the org's budgets kept changing during a reservation")


async def _refuse(
    sessions: async_sessionmaker[AsyncSession],
    org_id: str,
    body: ReservationCreate,
    budget: Limit,
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
    # The refusal leaves a trace before it is answered: its event commits on its own.
    async with transaction(sessions) as session:
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
    if held is None or json.loads(held[0])["org_id"] != org_id:
        return None
    await write_rows(session, [held])
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
    budgets: Sequence[Limit] | None = None,
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
    session: AsyncSession, cache: Redis, reservation: Reservation, budgets: Sequence[Limit]
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
    spender: Spender,
    budgets: Sequence[Limit],
) -> Metric | None:
    """Settle the reservation a spend names with the spend of its metric. `budgets`: every budget
    covering `spender` (user, team, API key), of any metric. Returns the metric whose spend the
    reservation counts (settled now or before), None when it counts none (unknown, or released).

    An open reservation is settled by one UPDATE (its row lock makes a concurrent settle or release
    wait, then find it closed); the rest (closed, or its row not in Postgres yet) goes through `find`."""

    def theirs(reservation: Reservation) -> list[Limit] | None:
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
        found = theirs(settled)
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
        await settle_open(session, cache, reservation, spend[metric], theirs(reservation))
    return metric


@dataclass(frozen=True)
class Spend:
    """What one call spent, of every metric, and the reservation it names (if any)."""

    spender: Spender
    amounts: dict[Metric, Decimal]
    reservation_id: uuid.UUID | None = None


_SETTLED, _RESERVED = ReservationStatus.SETTLED.value, ReservationStatus.RESERVED.value
# Settles the org's open reservations among `ids` with the spend of each one's metric (an array per
# metric, in the order of `ids`): one statement text whatever the batch's size, compiled once (a VALUES
# list is compiled again for every size). The rows come back as read, not as ORM objects.
_SETTLE_OPEN = text(f"""
    UPDATE usage_reservation
    SET status = '{_SETTLED}', closed_at = :now,
        actual = CASE metric {" ".join(f"WHEN '{m.value}' THEN spent.{m.value}" for m in Metric)} END
    FROM unnest(CAST(:ids AS uuid[]), {", ".join(f"CAST(:{m.value} AS numeric[])" for m in Metric)})
        AS spent (reservation_id, {", ".join(m.value for m in Metric)})
    WHERE {owned_by_sql("org_id")} AND id = spent.reservation_id AND status = '{_RESERVED}'
    RETURNING id, metric, actual, user_id, team_id, api_key_id, budget_ids
""").columns(  # noqa: S608  (only constants are interpolated)
    *(
        Reservation.__table__.c[name]
        for name in ("id", "metric", "actual", "user_id", "team_id", "api_key_id", "budget_ids")
    )
)


async def settle_batch(session: AsyncSession, cache: Redis, org_id: str, spends: Sequence[Spend]) -> None:
    """Charge the spends of one org to its budgets: through the reservation a spend names when it is
    still open (settled with the spend of its metric, the rest charged directly), directly otherwise.
    The open reservations are settled by one UPDATE, the budgets covering every spender read by one
    SELECT, their ledgers charged by one statement and Redis told in one step (holds dropped, counters
    raised); a spend whose reservation is not open in Postgres (closed, unknown, or its row not written
    yet) goes through `settle_spent` on its own."""
    now = _now()
    first = {s.reservation_id: s for s in reversed(spends) if s.reservation_id is not None}
    settled = {}
    if first:
        parameters: dict[str, Any] = {"org_id": org_id, "now": now, "ids": list(first)}
        for m in Metric:
            parameters[m.value] = [exact(m, s.amounts.get(m, Decimal(0))) for s in first.values()]
        settled = {row.id: row for row in await session.execute(_SETTLE_OPEN, parameters)}
    owners = {row.id: (row.user_id, row.team_id, row.api_key_id) for row in settled.values()}
    budgets = await covering(session, org_id, list({*(s.spender for s in spends), *owners.values()}))
    charged: dict[uuid.UUID, tuple[Limit, Decimal]] = {}

    def add(found: Sequence[Limit], metric: Metric, amount: Decimal) -> None:
        for b in found:
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
            counted = Metric(reservation.metric)
            add(budgets[owners[reservation.id]], counted, reservation.actual)
            releases.append(
                (reservation.id, [BudgetKeys(org_id, uuid.UUID(b)) for b in reservation.budget_ids])
            )
        for metric, amount in s.amounts.items():
            if metric is not counted:
                add(budgets[s.spender], metric, exact(metric, amount))
    charges = await charge_ledgers(session, list(charged.values()), now)
    await holds.settle_many(cache, releases, charges)
    for s in alone:
        assert s.reservation_id is not None
        theirs = budgets[s.spender]
        counted = await settle_spent(session, cache, org_id, s.reservation_id, s.amounts, s.spender, theirs)
        for metric, amount in s.amounts.items():
            if metric is not counted:
                await charge(session, cache, metric, [b for b in theirs if b.metric == metric.value], amount)


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
