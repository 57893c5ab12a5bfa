"""Signing keys and the tokens the gateway hands out.

- Access tokens: JWTs signed with the newest signing key (Ed25519 or P-256), named by `kid`. Every
  target verifies them against `/.well-known/jwks.json`.
- Signing keys live in `gateway_signing_key`, the private half sealed with AES-256-GCM under the
  configured key-encryption key. The first process to start creates one; a key older than its
  lifetime is replaced. A new key is published first and signs only after an activation delay
  longer than the verifiers' JWKS refresh interval, so no verifier ever meets a `kid` it cannot
  fetch; a replaced key stays published until every token it signed has expired.
- Refresh tokens, personal access tokens and invitations are opaque random strings, stored as
  SHA-256 hashes (they carry 256 bits of entropy, so a slow hash buys nothing).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.gateway.models import SigningKey
from coder.shared.db import transaction

REFRESH_PREFIX = "cdr_rt_"
PERSONAL_PREFIX = "cdr_pat_"
INVITATION_PREFIX = "cdr_inv_"
# Published keys stay this long past the expiry of the last token they could have signed.
PUBLISH_GRACE = timedelta(seconds=120)
_KEY_LOCK = 0x6B65797374  # pg advisory lock id: one process at a time creates or rotates keys
NONCE_BYTES = 12

# A workload token's lifetime (at most an access token's): short, its holder trades for a new one.
WORKLOAD_TTL_SECONDS = 300

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: the SHA-256 of the key's required members, a stable and collision-free `kid`."""
    required = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _generate(algorithm: str) -> tuple[PrivateKey, dict[str, Any]]:
    if algorithm == "EdDSA":
        okp = Ed25519PrivateKey.generate()
        return okp, json.loads(OKPAlgorithm.to_jwk(okp.public_key()))
    if algorithm == "ES256":
        p256 = ec.generate_private_key(ec.SECP256R1())
        return p256, json.loads(ECAlgorithm.to_jwk(p256.public_key()))
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _seal(kek: bytes, plaintext: bytes, kid: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, plaintext, kid.encode())


def _unseal(kek: bytes, sealed: bytes, kid: str) -> bytes:
    return AESGCM(kek).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], kid.encode())


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    algorithm: str
    private: PrivateKey
    public_jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None


class KeyStore:
    """The signing keys as this process knows them, re-read from the database now and then."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        kek: bytes,
        algorithm: str,
        issuer: str,
        audience: str,
        access_ttl: int,
        key_lifetime: int,
        reload_seconds: float,
        activation_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._kek = kek
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self._lifetime = timedelta(seconds=key_lifetime)
        self._reload_seconds = reload_seconds
        self._activation = timedelta(seconds=activation_seconds)
        self._keys: list[LoadedKey] = []
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def published_for(self) -> timedelta:
        return (
            timedelta(seconds=self.access_ttl)
            + PUBLISH_GRACE
            + timedelta(seconds=self._reload_seconds)
            + self._activation
        )

    async def _fresh(self) -> list[LoadedKey]:
        if time.monotonic() - self._loaded_at < self._reload_seconds and self._keys:
            return self._keys
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self._reload_seconds or not self._keys:
                await self.reload()
        return self._keys

    async def reload(self) -> None:
        """Read the keys; create the first one, or rotate one past its lifetime, if this process must."""
        async with transaction(self._sessions) as session:
            rows = await self._rows(session)
            if not rows or rows[0].created_at + self._lifetime <= _now():
                await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _KEY_LOCK})
                rows = await self._rows(session)  # another process may have done it meanwhile
                if not rows or rows[0].created_at + self._lifetime <= _now():
                    await self._rotate(session, first=not rows)
                    rows = await self._rows(session)
            self._keys = [self._load(r) for r in rows]
        self._loaded_at = time.monotonic()

    async def rotate(self) -> str:
        """Publish a new key, signing after the activation delay; returns its `kid`. The old ones keep
        verifying until their tokens have expired."""
        async with transaction(self._sessions) as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _KEY_LOCK})
            kid = await self._rotate(session, first=False)
        await self.reload()
        return kid

    async def _rows(self, session: AsyncSession) -> list[SigningKey]:
        published_after = _now() - self.published_for
        query = (
            select(SigningKey)
            .where((SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > published_after))
            .order_by(SigningKey.created_at.desc())
        )
        return list((await session.execute(query)).scalars().all())

    async def _rotate(self, session: AsyncSession, *, first: bool) -> str:
        now = _now()
        # The very first key signs at once: no verifier can have cached a JWKS without it.
        created = now - self._activation if first else now
        private, public = _generate(self.algorithm)
        kid = _thumbprint(public)
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # The old key signs until the new one takes over, and is published for a while after that.
        replaced = update(SigningKey).where(SigningKey.retired_at.is_(None))
        await session.execute(replaced.values(retired_at=now + self._activation))
        # Keys no token can still carry are of no use to anyone: drop them.
        await session.execute(delete(SigningKey).where(SigningKey.retired_at < now - self.published_for))
        session.add(
            SigningKey(
                kid=kid,
                algorithm=self.algorithm,
                private_key=_seal(self._kek, der, kid),
                public_jwk={**public, "kid": kid, "alg": self.algorithm, "use": "sig"},
                created_at=created,
            )
        )
        await session.flush()
        return kid

    def _load(self, row: SigningKey) -> LoadedKey:
        private = serialization.load_der_private_key(_unseal(self._kek, row.private_key, row.kid), None)
        assert isinstance(private, Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        return LoadedKey(row.kid, row.algorithm, private, row.public_jwk, row.created_at, row.retired_at)

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in await self._fresh()]}

    async def sign(self, claims: dict[str, Any]) -> str:
        """Sign any claims with the current key (access tokens go through `access_token`)."""
        keys = await self._fresh()
        # The newest key past its activation delay; before any is, the oldest published one.
        ready = _now() - self._activation
        key = next((k for k in keys if k.created_at <= ready), keys[-1])
        return jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})

    async def access_token(
        self,
        *,
        subject: str,
        org: str,
        permissions: Sequence[str],
        session: str,
        ttl: int | None = None,
        **extra: Any,
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds. `sid` names what revokes it."""
        lifetime = min(ttl or self.access_ttl, self.access_ttl)
        now = time.time()
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "org": org,
            "perms": list(permissions),
            # Milliseconds: a revocation at time t must tell tokens issued just before t from just after.
            "iat": round(now, 3),
            "nbf": int(now),
            "exp": int(now) + lifetime,
            "jti": uuid.uuid4().hex,
            "sid": session,
            **extra,
        }
        return await self.sign(claims), lifetime

    async def workload_token(
        self, *, subject: str, org: str, actor: str, audience: str, session: str | None
    ) -> tuple[str, int]:
        """A workload token (RFC 8693 `act`): `actor` acting for `subject` in `org`, good only at
        `audience`. No `perms`: the callee admits what `actor`'s descriptor grants. `sid`, when the
        user's token had one, lets a logout revoke it with the user's token."""
        lifetime = min(WORKLOAD_TTL_SECONDS, self.access_ttl)
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": subject,
            "org": org,
            "act": {"sub": actor},
            "iat": round(now, 3),
            "nbf": int(now),
            "exp": int(now) + lifetime,
            "jti": uuid.uuid4().hex,
        }
        if session is not None:
            claims["sid"] = session
        return await self.sign(claims), lifetime
