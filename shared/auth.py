"""Token verification, shared by every target: no target trusts a header on its own word.

Access tokens are JWTs signed by the gateway with an asymmetric key named by `kid`; targets check
them against the gateway's JWKS (fetched and cached, refetched when an unknown `kid` shows up, so
a key rotation needs no restart). Claims used: `sub`, `org` (tenant), `perms` (`<target>:<action>`).

A workload token is how one target calls another for a user (docs/architecture.md, "Service-to-service
identity"): signed by the gateway like an access token, `aud` the callee, `sub`/`org` the user's and
`act: {"sub": "<calling target>"}` (RFC 8693), no `perms`. It is good only at the target it names, and
only for the actions the calling target's descriptor `grants`; the gateway itself never accepts one.

A valid signature is not enough: the gateway keeps a revocation list in Redis (ended sessions and
revoked personal tokens by `sid`, members whose role changed by org and user), and every target reads
the same keys (`RevocationList`), so a target called directly, not through the gateway, refuses a
logged-out token within `REVOCATION_CACHE_SECONDS` rather than at its expiry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request, WebSocket
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from coder.shared.errors import Forbidden, Unauthorized, Unavailable, answers
from coder.shared.target import Access, Descriptor

log = logging.getLogger(__name__)

ALGORITHMS = ["EdDSA", "ES256", "RS256"]
JWKS_TTL_SECONDS = 300.0
JWKS_REFRESH_MIN_INTERVAL = 10.0
# How long a target trusts its last reading of the revocation list for a token: the bound on how late
# a logout or a role change reaches a target called directly (the gateway itself reads on every call).
REVOCATION_CACHE_SECONDS = 2.0
REVOCATION_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    subject: str
    org_id: str
    permissions: frozenset[str]
    token_id: str | None = None
    claims: dict[str, Any] | None = None
    # A workload token's: the calling target (`act.sub`) and the target it was issued for (`aud`).
    actor: str | None = None
    audience: str | None = None

    def can(self, permission: str) -> bool:
        target = permission.split(":", 1)[0]
        return bool({permission, f"{target}:*", "*"} & self.permissions)


JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: dict[str, Any] | None = None,
        fetch: JwksFetcher | None = None,
    ) -> None:
        if jwks is None and fetch is None:
            raise ValueError("a JWKS document or a way to fetch one is required")
        self.issuer = issuer
        self.audience = audience
        self._fetch = fetch
        self._keys: dict[str, Any] = self._parse(jwks) if jwks is not None else {}
        self._fetched_at = time.monotonic() if jwks is not None else 0.0
        self._lock = asyncio.Lock()
        # Tokens already verified, until they expire: a token's signature does not change, and its
        # check is a large share of a short request. Revocation is checked apart, on every use.
        self._verified: OrderedDict[tuple[str, bool], Principal] = OrderedDict()

    @staticmethod
    def _parse(document: dict[str, Any]) -> dict[str, Any]:
        keys = {}
        for jwk in document.get("keys", []):
            if "kid" in jwk:
                keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk)
        return keys

    async def _key(self, kid: str) -> jwt.PyJWK:
        stale = time.monotonic() - self._fetched_at > JWKS_TTL_SECONDS
        if (kid not in self._keys or stale) and self._fetch is not None:
            async with self._lock:
                since = time.monotonic() - self._fetched_at
                if since > JWKS_REFRESH_MIN_INTERVAL or (stale and since > JWKS_TTL_SECONDS):
                    try:
                        self._keys = self._parse(await self._fetch())
                        self._fetched_at = time.monotonic()
                    except (httpx.HTTPError, ValueError, json.JSONDecodeError) as exc:
                        if not self._keys:
                            raise Unauthorized(
                                "token keys are unavailable",
                                status=503,
                                slug="unavailable",
                                title="Service unavailable",
                            ) from exc
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("token signed by an unknown key") from None

    async def verify(self, token: str, *, workload: bool = False) -> Principal:
        """The token's principal. With `workload`, a workload token (aud a target) is accepted too."""
        principal = self._verified.get((token, workload))
        if principal is not None and (principal.claims or {}).get("exp", 0) > time.time():
            self._verified.move_to_end((token, workload))
            return principal
        principal = await self._verify(token, workload)
        self._verified[(token, workload)] = principal
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str, workload: bool) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("token has no key id")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                # A workload token's audience is its callee, checked against the action (`require`).
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"], "verify_aud": not workload},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        org = claims.get("org")
        if workload and claims["aud"] != self.audience:
            act = claims.get("act")
            actor = act.get("sub") if isinstance(act, dict) else None
            if not isinstance(actor, str) or not isinstance(claims["aud"], str) or not isinstance(org, str):
                raise Unauthorized("invalid token: audience doesn't match")
            return Principal(
                subject=claims["sub"],
                org_id=org,
                permissions=frozenset(),
                token_id=claims.get("jti"),
                claims=claims,
                actor=actor,
                audience=claims["aud"],
            )
        perms = claims.get("perms", [])
        if not isinstance(org, str) or not isinstance(perms, list):
            raise Unauthorized("token lacks an organization or permissions")
        return Principal(
            subject=claims["sub"],
            org_id=org,
            permissions=frozenset(map(str, perms)),
            token_id=claims.get("jti"),
            claims=claims,
        )


VERIFIED_CACHE_SIZE = 10_000
# How far the clocks of the signer and a verifier may disagree (on `exp`, `iat`, `nbf`).
LEEWAY_SECONDS = 5


class RevocationList:
    """Reads the revocation list the gateway writes (gateway/edge.py `Revocations`)."""

    def __init__(self, cache: Redis, *, fail_open: bool = False, cache_seconds: float = 0.0) -> None:
        self._cache = cache
        self._fail_open = fail_open
        self._cache_seconds = cache_seconds
        self._seen: dict[tuple[str, ...], tuple[float, list[Any]]] = {}

    @staticmethod
    def keys_for(principal: Principal) -> list[str]:
        keys = [f"gateway:stale:{principal.org_id}:{principal.subject}"]
        sid = (principal.claims or {}).get("sid")
        if isinstance(sid, str):
            keys.append(f"gateway:revoked:{sid}")
        return keys

    @staticmethod
    def judge(principal: Principal, values: list[Any]) -> None:
        """Refuse the token if the revocation list (values read for `keys_for`) names it."""
        claims = principal.claims or {}
        stale, revoked = values[0], values[1] if len(values) > 1 else None
        if revoked is not None:
            raise Unauthorized("this token was revoked", slug="token-revoked")
        if stale is not None and float(claims.get("iat", 0)) < float(stale):
            raise Unauthorized("this token predates a change of role; refresh it", slug="token-outdated")

    async def _values(self, keys: list[str]) -> list[Any]:
        if self._cache_seconds <= 0:
            return list(await self._cache.mget(keys))
        now = time.monotonic()
        seen = self._seen.get(tuple(keys))
        if seen is not None and now - seen[0] < self._cache_seconds:
            return seen[1]
        values = list(await self._cache.mget(keys))
        if len(self._seen) >= REVOCATION_CACHE_SIZE:
            self._seen.clear()
        self._seen[tuple(keys)] = (now, values)
        return values

    async def check(self, principal: Principal) -> None:
        try:
            values = await self._values(self.keys_for(principal))
        except (RedisError, OSError) as exc:
            if self._fail_open:
                log.warning("revocation list unavailable; accepting the token", extra={"error": repr(exc)})
                return
            raise Unavailable("the revocation list is unavailable", slug="revocations-unavailable") from None
        self.judge(principal, values)


def background_subject(target: str) -> str:
    """The `sub` of a workload token acting for an organization with no user (`background_grants`)."""
    return f"target:{target}"


def bearer_token(request: HTTPConnection) -> str | None:
    """The request's bearer token, read from its own Authorization header (the protocol middleware
    has already refused a request carrying more than one); without one, from `x-api-key`, where
    Anthropic-style clients put their key."""
    if "authorization" not in request.headers:
        return request.headers.get("x-api-key", "").strip() or None
    scheme, _, token = request.headers["authorization"].partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@answers(401, 503)
async def _principal(request: Request) -> Principal:
    return await _verified(request)


async def _verified(connection: HTTPConnection) -> Principal:
    token = bearer_token(connection)
    if not token:
        raise Unauthorized("a bearer token is required")
    runtime = connection.app.state.runtime
    verifier: TokenVerifier = runtime.verifier
    principal = await verifier.verify(token, workload=True)
    revocations: RevocationList | None = runtime.revocations
    if revocations is not None:
        await revocations.check(principal)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def require(permission: str) -> Any:
    """A dependency that admits callers holding `permission` (`<target>:<action>`).

    A workload token admits only what its calling target's descriptor `grants`, and only at the target
    it names. A SERVICE action (coder.shared.target.Access) admits nothing else: a target calls it for
    a user with its workload identity, and no user token passes, the owner's `*` included."""

    @answers(401, 403)
    async def check(request: Request, principal: CurrentPrincipal) -> Principal:
        return _authorized(request.app.state.runtime.descriptors, principal, permission)

    return Depends(check)


async def websocket_principal(websocket: WebSocket, permission: str) -> Principal:
    """`require(permission)` for a WebSocket route, which gets no dependencies that read a Request:
    the same token, revocation and permission checks, raising the same problems (the route maps
    them to close codes)."""
    principal = await _verified(websocket)
    return _authorized(websocket.app.state.runtime.descriptors, principal, permission)


def _authorized(descriptors: Mapping[str, Descriptor], principal: Principal, permission: str) -> Principal:
    target, _, action = permission.partition(":")
    if principal.actor is not None:
        if principal.audience != target:
            raise Unauthorized(f"this workload token is for {principal.audience}, not {target}")
        caller = descriptors.get(principal.actor)
        if caller is None or permission not in caller.grants:
            raise Forbidden(f"{principal.actor} is not granted {permission}", required=permission)
        if principal.subject == background_subject(principal.actor) and (
            permission not in caller.background_grants
        ):
            raise Forbidden(f"{principal.actor} may not use {permission} without a user", required=permission)
        return principal
    described = descriptors.get(target)
    kind = described.permissions.get(action) if described is not None else None
    if kind is not None and kind.access is Access.SERVICE:
        raise Forbidden(
            f"{permission} is called by a target for a user, with a workload token", required=permission
        )
    if not principal.can(permission):
        raise Forbidden(f"requires permission {permission}", required=permission)
    return principal
