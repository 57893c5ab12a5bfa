"""Budget holds and spend counters in Redis, changed only by Lua scripts: checking every budget that
applies and holding the amount against all of them is one atomic step, however many replicas run.

Keys, all under the org's hash tag (one cluster slot, so one script may touch all of an org's budgets):
  usage:{<org>}:budget:<id>:spent:<period start>  units spent in the period; a cache of the Postgres ledger
  usage:{<org>}:budget:<id>:holds                 hash: reservation id -> units held, `_total` -> their sum
  usage:{<org>}:budget:<id>:expiry                sorted set: reservation id -> expiry (ms, Redis's clock)
  usage:{<org>}:budgets:version                   new at every budget write: a hold checks caches by it
  usage:{<org>}:reservation:<id>                  hash: the reservation's row (`row`, JSON), `expires` (ms),
                                                  for as long as its hold (Postgres gets the row just after)
Every key has a TTL. Amounts are integer units (micro-dollars, tokens) because Lua numbers are doubles.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from coder.services.usage.schemas import Metric

UNITS = {Metric.COST_USD: Decimal(1_000_000), Metric.TOKENS: Decimal(1)}
MAX_UNITS = 2**53  # the largest integer a Lua number holds exactly
# A counter that ran ahead of the ledger (a settle whose commit then failed) is corrected this soon.
SPENT_TTL_SECONDS = 3600
HOLD_TTL_MARGIN_SECONDS = 60
# Far longer than any process keeps a budget cache entry (reservations.BUDGETS_CACHE_SECONDS).
VERSION_TTL_SECONDS = 7 * 24 * 3600


def to_units(metric: Metric, amount: Decimal) -> int:
    return int((amount * UNITS[metric]).to_integral_value(ROUND_HALF_UP))


def from_units(metric: Metric, units: int) -> Decimal:
    return Decimal(units) / UNITS[metric]


@dataclass(frozen=True)
class BudgetKeys:
    org_id: str
    budget_id: uuid.UUID

    @property
    def _base(self) -> str:
        return f"usage:{{{self.org_id}}}:budget:{self.budget_id}"

    def spent(self, period_start: datetime) -> str:
        return f"{self._base}:spent:{int(period_start.timestamp())}"

    @property
    def holds(self) -> str:
        return f"{self._base}:holds"

    @property
    def expiry(self) -> str:
        return f"{self._base}:expiry"


def version_key(org_id: str) -> str:
    return f"usage:{{{org_id}}}:budgets:version"


def record_key(org_id: str, reservation_id: uuid.UUID) -> str:
    return f"usage:{{{org_id}}}:reservation:{reservation_id}"


RECORD_KEYS = "usage:{*}:reservation:*"  # every org's (a SCAN pattern)


@dataclass(frozen=True)
class Check:
    """One budget a reservation must fit in."""

    keys: BudgetKeys
    period_start: datetime
    limit: int


@dataclass(frozen=True)
class Charge:
    """Spend added to one budget: `total` is the ledger's value for the period including it."""

    keys: BudgetKeys
    period_start: datetime
    units: int
    total: int


@dataclass(frozen=True)
class Held:
    expires_at: datetime


@dataclass(frozen=True)
class Stale:
    """The budgets checked are not the org's current ones (a budget was written since they were read)."""


@dataclass(frozen=True)
class Refused:
    index: int  # which of the budgets passed in
    spent: int
    reserved: int


# Drops the holds whose expiry has passed; `now` is Redis's own clock, the same for every replica.
_PURGE = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function purge(holds, expiry, now)
  now = string.format('%d', now)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  for _, id in ipairs(gone) do
    local held = redis.call('HGET', holds, id)
    if held then
      redis.call('HDEL', holds, id)
      redis.call('HINCRBY', holds, '_total', string.format('%d', -tonumber(held)))
    end
  end
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', expiry, '-inf', now)
  end
end
"""

# KEYS: the org's budgets version, the reservation's record, then spent, holds, expiry per budget.
# ARGV: reservation id, amount, ttl ms, hold ttl s, spent ttl s, the version the budgets were read at,
# the reservation's row (JSON), then per budget: limit, seed ('' = unknown).
# Returns {'stale'} when the budgets were written since that version (nothing changed),
# {'seed', i...} when spent counters are missing and unseeded (nothing changed),
# {'refused', i, spent, reserved} for the first budget the amount would overrun (nothing changed),
# or {'ok', expires ms} once the amount is held against every budget and the record is stored.
_RESERVE = (
    _PURGE
    + """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[6] then
  return {'stale'}
end
local rid, amount, ttl_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local hold_ttl, spent_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local n = (#KEYS - 2) / 3
local missing = {'seed'}
for i = 1, n do
  if redis.call('EXISTS', KEYS[3 * i]) == 0 then
    local seed = ARGV[7 + 2 * i]
    if seed == '' then
      missing[#missing + 1] = i
    else
      redis.call('SET', KEYS[3 * i], seed, 'EX', spent_ttl)
    end
  end
end
if #missing > 1 then
  return missing
end
local now = now_ms()
for i = 1, n do
  local holds = KEYS[3 * i + 1]
  purge(holds, KEYS[3 * i + 2], now)
  local spent = tonumber(redis.call('GET', KEYS[3 * i]))
  local reserved = tonumber(redis.call('HGET', holds, '_total') or '0')
  if spent + reserved + amount > tonumber(ARGV[6 + 2 * i]) then
    return {'refused', i, string.format('%d', spent), string.format('%d', reserved)}
  end
end
local expires = now + ttl_ms
for i = 1, n do
  local holds, expiry = KEYS[3 * i + 1], KEYS[3 * i + 2]
  redis.call('HSET', holds, rid, ARGV[2])
  redis.call('HINCRBY', holds, '_total', ARGV[2])
  redis.call('ZADD', expiry, string.format('%d', expires), rid)
  -- Both keys share one TTL, never shorter than a hold they carry.
  local ttl = math.max(redis.call('TTL', holds), hold_ttl)
  redis.call('EXPIRE', holds, ttl)
  redis.call('EXPIRE', expiry, ttl)
end
redis.call('HSET', KEYS[2], 'row', ARGV[7], 'expires', string.format('%d', expires))
redis.call('EXPIRE', KEYS[2], hold_ttl)
return {'ok', string.format('%d', expires)}
"""
)

# KEYS: holds, expiry per budget to release, reservation after reservation, then spent per budget
# to charge. ARGV: spent ttl s, number of reservations, then per reservation: its id and number of
# budgets to release, then per charge: units, seed. A missing counter is set to the seed: the
# ledger's value including this charge, read in the charging transaction, so a counter is never
# rebuilt without it.
_SETTLE = """
local spent_ttl, reservations = tonumber(ARGV[1]), tonumber(ARGV[2])
local k, a = 0, 2
for r = 1, reservations do
  local rid, released = ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 2
  for i = 1, released do
    local holds = KEYS[k + 1]
    local held = redis.call('HGET', holds, rid)
    if held then
      redis.call('HDEL', holds, rid)
      redis.call('HINCRBY', holds, '_total', string.format('%d', -tonumber(held)))
    end
    redis.call('ZREM', KEYS[k + 2], rid)
    k = k + 2
  end
end
for j = k + 1, #KEYS do
  local spent = KEYS[j]
  if redis.call('EXISTS', spent) == 1 then
    redis.call('INCRBY', spent, ARGV[a + 1])
  else
    redis.call('SET', spent, ARGV[a + 2], 'EX', spent_ttl)
  end
  a = a + 2
end
return 'ok'
"""

# KEYS: holds, expiry per budget. Returns the units still held against each.
_RESERVED = (
    _PURGE
    + """
local now = now_ms()
local totals = {}
for i = 1, #KEYS / 2 do
  purge(KEYS[2 * i - 1], KEYS[2 * i], now)
  totals[i] = redis.call('HGET', KEYS[2 * i - 1], '_total') or '0'
end
return totals
"""
)


class _Script:
    """A Lua script run by its SHA1, loaded on first use (and again after a server restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, cache: Redis, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await cache.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await cache.eval(self.source, len(keys), *keys, *args)


_reserve = _Script(_RESERVE)
_settle = _Script(_SETTLE)
_reserved = _Script(_RESERVED)

SeedLoader = Callable[[Sequence[int]], Awaitable[Sequence[int]]]


async def reserve(
    cache: Redis,
    org_id: str,
    version: str,
    reservation_id: uuid.UUID,
    row: str,
    checks: Sequence[Check],
    amount: int,
    ttl_seconds: int,
    load_spent: SeedLoader,
) -> Held | Refused | Stale:
    """Hold `amount` against every budget and store the reservation's `row`, or against none if any
    would overrun its limit, or if the org's budgets changed since `version` (they are read again).

    `load_spent(indexes)` reads the ledger for budgets whose counter Redis does not have."""
    seeds = [""] * len(checks)
    keys = [version_key(org_id), record_key(org_id, reservation_id)]
    keys += [key for c in checks for key in (c.keys.spent(c.period_start), c.keys.holds, c.keys.expiry)]
    # A counter can vanish between two calls (TTL, flush): each round seeds whatever is missing.
    for _ in range(3):
        tail = [str(v) for c, seed in zip(checks, seeds, strict=True) for v in (c.limit, seed)]
        reply = await _reserve(
            cache,
            keys,
            [
                str(reservation_id),
                amount,
                ttl_seconds * 1000,
                ttl_seconds + HOLD_TTL_MARGIN_SECONDS,
                SPENT_TTL_SECONDS,
                version,
                row,
                *tail,
            ],
        )
        match reply[0]:
            case "ok":
                return Held(_instant(reply[1]))
            case "refused":
                return Refused(int(reply[1]) - 1, int(reply[2]), int(reply[3]))
            case "stale":
                return Stale()
            case _:
                missing = [int(i) - 1 for i in reply[1:]]
                for index, spent in zip(missing, await load_spent(missing), strict=True):
                    seeds[index] = str(spent)
    raise RuntimeError("budget counters kept disappearing from Redis")


def _instant(ms: str | int) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


async def budgets_version(cache: Redis, org_id: str) -> str:
    """The org's budgets version: read before the budgets themselves, then checked with every hold."""
    return str(await cache.get(version_key(org_id)) or "")


async def budgets_changed(cache: Redis, org_id: str) -> None:
    """A budget write committed: every replica reads the org's budgets again before its next hold.
    A fresh random value, never a counter: a version that lapsed and started again cannot repeat."""
    await cache.set(version_key(org_id), uuid.uuid4().hex, ex=VERSION_TTL_SECONDS)


async def record(cache: Redis, org_id: str, reservation_id: uuid.UUID) -> tuple[str, datetime] | None:
    """A reservation's row (JSON) and expiry as held in Redis, until its hold's TTL ends."""
    found = await cache.hmget(record_key(org_id, reservation_id), ["row", "expires"])
    if found[0] is None or found[1] is None:
        return None
    return str(found[0]), _instant(str(found[1]))


async def records(cache: Redis) -> list[tuple[str, datetime]]:
    """Every reservation's row (JSON) and expiry held in Redis: a SCAN of the keyspace, for the
    sweeper (reservations.write_lost_rows), never for a request."""
    keys = [key async for key in cache.scan_iter(match=RECORD_KEYS, count=1000)]
    found = []
    for start in range(0, len(keys), 1000):
        async with cache.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.hmget(key, ["row", "expires"])
            replies = await pipe.execute()
        found += [(str(row), _instant(str(expires))) for row, expires in replies if row and expires]
    return found


async def settle(
    cache: Redis, reservation_id: uuid.UUID | None, release: Sequence[BudgetKeys], charges: Sequence[Charge]
) -> None:
    """Drop the reservation's holds on `release` and add the charges to the spent counters, in one
    atomic step: no check ever sees the amount both held and spent, or neither."""
    await settle_many(cache, [(reservation_id, release)] if release else [], charges)


async def settle_many(
    cache: Redis,
    releases: Sequence[tuple[uuid.UUID | None, Sequence[BudgetKeys]]],
    charges: Sequence[Charge],
) -> None:
    """`settle` for several reservations of one org at once (their keys share its hash slot): every
    hold dropped and every charge added in one atomic step."""
    if not any(release for _, release in releases) and not charges:
        return
    keys = [key for _, release in releases for b in release for key in (b.holds, b.expiry)]
    keys += [c.keys.spent(c.period_start) for c in charges]
    argv: list[str | int] = [SPENT_TTL_SECONDS, len(releases)]
    for reservation_id, release in releases:
        argv += [str(reservation_id or ""), len(release)]
    argv += [str(v) for c in charges for v in (c.units, c.total)]
    await _settle(cache, keys, argv)


async def reserved(cache: Redis, budgets: Sequence[BudgetKeys]) -> list[int]:
    """Units currently held against each budget (expired holds dropped first)."""
    if not budgets:
        return []
    keys = [key for b in budgets for key in (b.holds, b.expiry)]
    return [int(v) for v in await _reserved(cache, keys, [])]
