"""What the gateway checks at its edge, shared by its own routes and the proxy.

- Who is calling: an access token (verified like every target does, then checked against the
  revocation list) or a personal access token (looked up, narrowed to its scopes, and exchanged for a
  short-lived access token that is forwarded instead, so targets only ever see signed JWTs).
- The revocation list: ended sessions and revoked personal tokens (`sid`), and members whose role
  changed or who were removed (tokens issued before that moment), kept in Redis until the last token
  concerned has expired anyway.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx
import jwt
from redis.asyncio import Redis

from coder.gateway import sessions as accounts
from coder.gateway.config import GatewaySettings
from coder.gateway.limits import LoginThrottle, RateLimiter, Verdict
from coder.gateway.oidc import OidcClient
from coder.gateway.tokens import PERSONAL_PREFIX, KeyStore, digest
from coder.shared.auth import Principal, RevocationList
from coder.shared.db import transaction
from coder.shared.errors import Problem, Unauthorized
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

PERSONAL_CACHE_SIZE = 10_000
# A personal token's exchanged access token is reused this long (also how often last-used moves).
PERSONAL_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class Caller:
    principal: Principal
    # The token to forward: the presented access token, or the one a personal token was exchanged for.
    token: str


class Revocations(RevocationList):
    """The revocation list as the gateway keeps it: written here, read here and by every target."""

    def __init__(self, cache: Redis, *, ttl_seconds: int, fail_open: bool) -> None:
        # The gateway reads on every request (no cache): it is where a revocation must show at once.
        super().__init__(cache, fail_open=fail_open)
        self._ttl = ttl_seconds

    async def revoke(self, sids: Iterable[str]) -> None:
        sids = list(sids)
        if not sids:
            return
        async with self._cache.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.set(f"gateway:revoked:{sid}", "1", ex=self._ttl)
            await pipe.execute()

    async def outdate(self, org_id: uuid.UUID | str, user_ids: Iterable[uuid.UUID | str]) -> None:
        """Tokens of these members issued until now stop working: their role changed or they left."""
        now = f"{time.time():.3f}"
        async with self._cache.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.set(f"gateway:stale:{org_id}:{user_id}", now, ex=self._ttl)
            await pipe.execute()


@dataclass(frozen=True)
class Admission:
    """What the edge learnt about a request in one round trip to Redis."""

    verdict: Verdict | None
    caller: Caller | None = None
    refusal: Problem | None = None


class Gateway:
    """The gateway's parts in one process. Built when the app is, opened lazily once the runtime runs."""

    def __init__(self, runtime: Runtime, settings: GatewaySettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self._personal: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        # Exchanges of personal tokens under way, by token digest (see `_exchange_personal`).
        self._exchanging: dict[str, asyncio.Future[Caller]] = {}
        # The merged OpenAPI document of /docs, with when it goes stale.
        self.docs_cache: tuple[float, dict[str, Any]] | None = None

    @property
    def cache(self) -> Redis:
        if self.runtime.cache is None:
            raise RuntimeError("the gateway needs Redis (or the in-process cache)")
        return self.runtime.cache

    @cached_property
    def keys(self) -> KeyStore:
        s = self.settings
        return KeyStore(
            self.runtime.sessions,
            kek=s.kek,
            algorithm=s.signing_algorithm,
            issuer=self.runtime.settings.token_issuer,
            audience=self.runtime.settings.token_audience,
            access_ttl=s.access_token_ttl_seconds,
            key_lifetime=s.signing_key_lifetime_seconds,
            reload_seconds=s.signing_key_reload_seconds,
            activation_seconds=s.signing_key_activation_seconds,
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        s = self.settings
        return RateLimiter(
            self.cache,
            per_token=s.rate_limit_per_token,
            per_ip=s.rate_limit_per_ip,
            window_seconds=s.rate_limit_window_seconds,
            fail_open=s.fail_open,
        )

    @cached_property
    def throttle(self) -> LoginThrottle:
        s = self.settings
        return LoginThrottle(
            self.cache,
            per_ip=s.login_max_failures_per_ip,
            window_seconds=s.login_failure_window_seconds,
            max_backoff_seconds=s.login_backoff_max_seconds,
        )

    @cached_property
    def revocations(self) -> Revocations:
        # Long enough that every token issued before a revocation has expired when the entry goes.
        ttl = self.settings.access_token_ttl_seconds + 120
        return Revocations(self.cache, ttl_seconds=ttl, fail_open=self.settings.fail_open)

    @cached_property
    def http(self) -> httpx.AsyncClient:
        """For talking to identity providers."""
        return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0), follow_redirects=False)

    @cached_property
    def oidc(self) -> OidcClient | None:
        s = self.settings
        if not s.oidc_client_id:
            return None
        return OidcClient(
            issuer=s.oidc_issuer,
            client_id=s.oidc_client_id,
            client_secret=s.oidc_client_secret,
            redirect_uri=s.oidc_redirect_uri,
            scopes=s.oidc_scopes,
            http=self.http,
        )

    async def authenticate(self, token: str) -> Caller:
        if not token.startswith(PERSONAL_PREFIX):
            caller = Caller(await self._verify(token), token)
            await self.revocations.check(caller.principal)
            return caller
        caller = await self._exchange_personal(token)
        try:
            await self.revocations.check(caller.principal)
        except Unauthorized as exc:
            if exc.slug != "token-outdated":
                raise
            # The owner's role changed since this process exchanged the token: exchange it again.
            self.forget_personal(digest(token))
            caller = await self._exchange_personal(token)
            await self.revocations.check(caller.principal)
        return caller

    async def admit(self, ip: str, token: str | None, *, authenticate: bool) -> Admission:
        """Rate limits, and (with `authenticate`) the caller: an access token verified here, or a
        personal access token this process exchanged lately; either checked against the revocation
        list in the same Redis round trip as the rate limits. Any other personal token is left to
        `authenticate` (it needs the database anyway), and so is a cached one the list refuses (that
        may only mean its owner's role changed: `authenticate` exchanges it again)."""
        caller: Caller | None = None
        refusal: Problem | None = None
        personal = token is not None and token.startswith(PERSONAL_PREFIX)
        if authenticate and token:
            if personal:
                caller = self._cached_personal(token)
            else:
                try:
                    caller = Caller(await self._verify(token), token)
                except Problem as problem:
                    refusal = problem
        deny = Revocations.keys_for(caller.principal) if caller is not None else None
        verdict, values = await self.limiter.check(ip, token, deny)
        if caller is None:
            return Admission(verdict, None, refusal)
        try:
            if values is not None:  # None: Redis is down and the gateway fails open
                Revocations.judge(caller.principal, values)
        except Problem as problem:
            return Admission(verdict) if personal else Admission(verdict, None, problem)
        return Admission(verdict, caller)

    async def _verify(self, token: str) -> Principal:
        # The verifier keeps verified claims until the token's `exp` (no signature check per request).
        verifier = self.runtime.verifier
        assert verifier is not None
        principal = await verifier.verify(token)
        if (principal.claims or {}).get("act") is not None:
            # A target acting for a user (a delegated token) reaches targets, never the user's account.
            raise Unauthorized("a token of a target acting for a user is no credential at the gateway")
        return principal

    def _cached_personal(self, token: str) -> Caller | None:
        """What this process exchanged the personal token for, while that is fresh."""
        key = digest(token)
        cached = self._personal.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._personal.move_to_end(key)
            return cached[1]
        return None

    async def _exchange_personal(self, token: str) -> Caller:
        """The personal token's access token: cached, else exchanged once for every request that
        wants it meanwhile (a burst on a hot token, or its expiry under load, is one database
        transaction and one signature, not one per request)."""
        if (cached := self._cached_personal(token)) is not None:
            return cached
        key = digest(token)
        exchange = self._exchanging.get(key)
        if exchange is None:
            exchange = self._exchanging[key] = asyncio.ensure_future(self._exchange(token, key))
            exchange.add_done_callback(functools.partial(self._exchanged, key))
        try:
            # Shielded: a caller that gives up (its client went away) leaves the others their exchange.
            return await asyncio.shield(exchange)
        except Problem as problem:
            raise copy.copy(problem) from None  # each its own: a refusal is amended per request

    def _exchanged(self, key: str, exchange: asyncio.Future[Caller]) -> None:
        if self._exchanging.get(key) is exchange:
            del self._exchanging[key]
        if not exchange.cancelled():
            exchange.exception()  # retrieved: every caller waiting for it was cancelled

    async def _exchange(self, token: str, key: str) -> Caller:
        async with transaction(self.runtime.sessions) as session:
            grant = await accounts.use_personal_token(session, token)
        remaining = int(grant.expires_at.timestamp() - time.time())
        access, ttl = await self.keys.access_token(
            subject=str(grant.user_id),
            org=str(grant.org_id),
            permissions=grant.permissions,
            session=f"pat:{grant.token_id}",
            ttl=max(1, remaining),
            amr=["pat"],
        )
        claims = jwt.decode(access, options={"verify_signature": False})
        principal = Principal(
            subject=claims["sub"],
            org_id=claims["org"],
            permissions=frozenset(claims["perms"]),
            token_id=claims["jti"],
            claims=claims,
        )
        caller = Caller(principal, access)
        # Not kept if the token was forgotten meanwhile (its grant may predate what made it so).
        if self._exchanging.get(key) is asyncio.current_task():
            self._personal[key] = (time.monotonic() + min(PERSONAL_CACHE_SECONDS, ttl / 2), caller)
            while len(self._personal) > PERSONAL_CACHE_SIZE:
                self._personal.popitem(last=False)
        return caller

    def forget_personal(self, token_hash: str | None = None) -> None:
        """Drop exchanges made, and those under way: the next use exchanges the token again."""
        if token_hash is None:
            self._personal.clear()
            self._exchanging.clear()
        else:
            self._personal.pop(token_hash, None)
            self._exchanging.pop(token_hash, None)

    async def close(self) -> None:
        if "http" in self.__dict__:
            await self.http.aclose()
