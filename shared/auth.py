"""Token verification, shared by every target: no target trusts a header on its own word.

Access tokens are JWTs signed by the gateway with an asymmetric key named by `kid`; targets check
them against the gateway's JWKS (fetched and cached, refetched when an unknown `kid` shows up, so
a key rotation needs no restart). Claims used: `sub`, `org` (tenant), `perms` (`<target>:<action>`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request

from coder.shared import context
from coder.shared.errors import Forbidden, Unauthorized, answers

ALGORITHMS = ["EdDSA", "ES256", "RS256"]
JWKS_TTL_SECONDS = 300.0
JWKS_REFRESH_MIN_INTERVAL = 10.0


@dataclass(frozen=True)
class Principal:
    subject: str
    org_id: str
    permissions: frozenset[str]
    token_id: str | None = None
    claims: dict[str, Any] | None = None

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

    async def verify(self, token: str) -> Principal:
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
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        org = claims.get("org")
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


@answers(401, 503)
async def _principal(request: Request) -> Principal:
    token = context.bearer_token.get()
    if not token:
        raise Unauthorized("a bearer token is required")
    verifier: TokenVerifier = request.app.state.runtime.verifier
    return await verifier.verify(token)


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def require(permission: str) -> Any:
    """A dependency that admits callers holding `permission` (`<target>:<action>`)."""

    @answers(403)
    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"requires permission {permission}", required=permission)
        return principal

    return Depends(check)
