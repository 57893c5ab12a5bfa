"""Rate limits and sign-in throttling, kept in Redis so every gateway replica counts together.

Rate limits use GCRA (the generic cell rate algorithm): one key per client holding the theoretical
arrival time of its next request, updated atomically by a Lua script that checks every limit of a
request at once (per token and per IP) and charges none of them when one says no. Every key expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from coder.shared.errors import Problem, Unavailable

log = logging.getLogger(__name__)

# Requests checked in one run of the script at most (see `RateLimiter._evaluate`).
MAX_BATCH = 256

# The checks of several requests, in order, each charging its limits only when all of them allow it.
# ARGV: the number of requests, then per request the number of its limits, the number of keys to
# read along (the revocation list's), and per limit its limit and period (ms). KEYS: per request,
# one per limit, then those to read. Answers, per request: {allowed (0/1), remaining of the tightest
# limit, retry-after ms, reset ms, the refusing limit's index (the one that asks to wait longest; 0
# when allowed), the value of each key read along (nil when absent)}.
_GCRA = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local answers = {}
local k = 0
local a = 1
for r = 1, tonumber(ARGV[1]) do
  local limits = tonumber(ARGV[a + 1])
  local reads = tonumber(ARGV[a + 2])
  a = a + 2
  local results = {}
  local allowed = 1
  local remaining = -1
  local retry = 0
  local reset = 0
  local refused_by = 0
  for i = 1, limits do
    local key = KEYS[k + i]
    local limit = tonumber(ARGV[a + 2 * i - 1])
    local period = tonumber(ARGV[a + 2 * i])
    local interval = period / limit
    local tat = tonumber(redis.call('GET', key) or t)
    if tat < t then tat = t end
    local new_tat = tat + interval
    local allow_at = new_tat - period
    if allow_at > t then
      allowed = 0
      if allow_at - t > retry then
        retry = allow_at - t
        refused_by = i
      end
    end
    local left = math.floor((period - (new_tat - t)) / interval)
    if remaining < 0 or left < remaining then remaining = left end
    reset = math.max(reset, new_tat - t)
    results[i] = new_tat
  end
  if allowed == 1 then
    for i = 1, limits do
      redis.call('SET', KEYS[k + i], results[i], 'PX', math.max(1, math.ceil(results[i] - t)))
    end
  end
  if remaining < 0 then remaining = 0 end
  local answer = {allowed, remaining, math.ceil(retry), math.ceil(reset), refused_by}
  for j = 1, reads do
    answer[#answer + 1] = redis.call('GET', KEYS[k + limits + j])
  end
  answers[r] = answer
  k = k + limits + reads
  a = a + 2 * limits
end
return answers
"""


# By the limit that said no: `ip` or `token` (requests per window), `login` (failed sign-ins).
REFUSALS = Counter(
    "gateway_rate_limit_refusals", "Requests the gateway refused with 429, by limit", ["limit"]
)


class RateLimited(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        values = [
            (b"ratelimit-limit", str(self.limit)),
            (b"ratelimit-remaining", str(self.remaining)),
            (b"ratelimit-reset", str(math.ceil(self.reset))),
        ]
        if not self.allowed:
            values.append((b"retry-after", str(max(1, math.ceil(self.retry_after)))))
        return [(k, v.encode()) for k, v in values]


def token_key(token: str) -> str:
    return hashlib.blake2b(token.encode(), digest_size=16).hexdigest()


class RateLimiter:
    def __init__(
        self, cache: Redis, *, per_token: int, per_ip: int, window_seconds: int, fail_open: bool
    ) -> None:
        self._cache = cache
        self.per_token = per_token
        self.per_ip = per_ip
        self.window_ms = window_seconds * 1000
        self.fail_open = fail_open
        self._script = cache.register_script(_GCRA)
        # Checks made in one turn of the event loop, sent together (see `_evaluate`).
        self._pending: list[tuple[list[str], list[int], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def _evaluate(self, keys: list[str], args: list[int]) -> asyncio.Future[Any]:
        """The script's answer for one request. The requests that arrive in the same turn of the event
        loop (under load, most of them) share one round trip to Redis, and one run of the script,
        which checks them in order as it would one by one."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        if not self._pending:
            loop.call_soon(self._dispatch)
        self._pending.append((keys, args, answer))
        if len(self._pending) >= MAX_BATCH:
            self._dispatch()  # a script run is atomic in Redis: a bounded one keeps others' waits short
        return answer

    def _dispatch(self) -> None:
        if not self._pending:
            return  # sent already, the batch full
        batch, self._pending = self._pending, []
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[str], list[int], asyncio.Future[Any]]]) -> None:
        keys = [key for request in batch for key in request[0]]
        args = [len(batch), *(arg for request in batch for arg in request[1])]
        try:
            results = await self._script(keys=keys, args=args)
        except Exception as exc:
            for *_, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except asyncio.CancelledError:
            for *_, answer in batch:
                answer.cancel()
            raise
        for (*_, answer), result in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(result)

    async def check(
        self, ip: str, token: str | None, also_get: list[str] | None = None
    ) -> tuple[Verdict | None, list[Any] | None]:
        """The verdict for one request, and the values of `also_get` read by the same script (one
        round trip, shared: `_evaluate`); (None, None) when Redis is down and the limiter fails open."""
        keys, names = [f"gateway:rl:ip:{ip}"], ["ip"]
        args: list[int] = [1, len(also_get or ()), self.per_ip, self.window_ms]
        limit = self.per_ip
        if token:
            keys.append(f"gateway:rl:tok:{token_key(token)}")
            names.append("token")
            args += [self.per_token, self.window_ms]
            args[0] = 2
            limit = min(limit, self.per_token)
        try:
            result = await self._evaluate(keys + (also_get or []), args)
        except (RedisError, OSError) as exc:
            if self.fail_open:
                log.warning(
                    "rate limiter unavailable; letting the request through", extra={"error": repr(exc)}
                )
                return None, None
            raise Unavailable(
                "the rate limiter is unavailable",
                slug="rate-limiter-unavailable",
                headers={"Retry-After": "5"},
            ) from None
        allowed, remaining, retry_ms, reset_ms, refused_by, *values = result
        if not allowed:
            REFUSALS.labels(names[int(refused_by) - 1]).inc()
        verdict = Verdict(bool(allowed), limit, int(remaining), int(retry_ms) / 1000, int(reset_ms) / 1000)
        return verdict, values if also_get else None


class LoginThrottle:
    """Failed sign-ins, per (account, address) and per address.

    Each failure from one address on one account doubles the wait before that address may try that
    account again (1, 2, 4, ... seconds, up to a cap): guessing is slow, yet nobody can lock the owner
    out, who signs in from another address. Failures from one address across accounts (password
    spraying) are limited per window. `clock` is injectable: the waits are kept as timestamps.
    """

    def __init__(
        self,
        cache: Redis,
        *,
        per_ip: int,
        window_seconds: int,
        max_backoff_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self.per_ip = per_ip
        self.window = window_seconds
        self.max_backoff = max_backoff_seconds
        self.clock = clock

    @staticmethod
    def _keys(email: str, ip: str) -> tuple[str, str]:
        pair = hashlib.sha256(f"{email.lower()}\n{ip}".encode()).hexdigest()[:32]
        return f"gateway:login:pair:{pair}", f"gateway:login:ip:{ip}"

    def backoff(self, failures: int) -> int:
        return min(self.max_backoff, 2 ** min(failures - 1, 30))

    async def check(self, email: str, ip: str) -> None:
        pair_key, ip_key = self._keys(email, ip)
        async with self._cache.pipeline(transaction=False) as pipe:
            pipe.hget(pair_key, "until")
            pipe.get(ip_key)
            pipe.ttl(ip_key)
            until, by_ip, ip_ttl = await pipe.execute()
        waits = []
        if until is not None and float(until) > (now := self.clock()):
            waits.append(float(until) - now)
        if int(by_ip or 0) >= self.per_ip:
            waits.append(ip_ttl if ip_ttl and ip_ttl > 0 else self.window)
        if waits:
            REFUSALS.labels("login").inc()
            wait = max(1, math.ceil(max(waits)))
            raise RateLimited(
                "too many failed sign-ins; try again later",
                slug="login-throttled",
                headers={"Retry-After": str(wait)},
                retry_after=wait,
            )

    async def failed(self, email: str, ip: str) -> None:
        pair_key, ip_key = self._keys(email, ip)
        async with self._cache.pipeline(transaction=True) as pipe:
            pipe.hincrby(pair_key, "failures", 1)
            pipe.incr(ip_key)
            pipe.expire(ip_key, self.window, nx=True)
            failures, *_ = await pipe.execute()
        delay = self.backoff(int(failures))
        async with self._cache.pipeline(transaction=True) as pipe:
            pipe.hset(pair_key, "until", str(self.clock() + delay))
            # Failures are forgotten after a quiet window (and never before the wait is over).
            pipe.expire(pair_key, max(self.window, delay))
            await pipe.execute()

    async def succeeded(self, email: str, ip: str) -> None:
        await self._cache.delete(self._keys(email, ip)[0])
