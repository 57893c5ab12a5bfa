"""Access tokens for tests: signed with a test key, checked by the real verification path."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ISSUER = AUDIENCE = "coder-platform"


class TestSigner:
    __test__ = False

    def __init__(self, kid: str = "test-key") -> None:
        self.kid = kid
        self.key = Ed25519PrivateKey.generate()

    def jwks(self) -> str:
        public = json.loads(OKPAlgorithm.to_jwk(self.key.public_key()))
        return json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "EdDSA"}]})

    def token(
        self,
        org: str,
        perms: Iterable[str] = ("*",),
        sub: str | None = None,
        ttl: int = 300,
        **claims: object,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub or f"user-{uuid.uuid4().hex[:8]}",
            "org": org,
            "perms": list(perms),
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(
        self, org: str, perms: Iterable[str] = ("*",), sub: str | None = None, ttl: int = 300
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org, perms, sub=sub, ttl=ttl)}"}

    def workload_headers(
        self, org: str, *, audience: str, caller: str, sub: str | None = None
    ) -> dict[str, str]:
        """A workload token as the gateway issues it (shared/auth.py): `caller` acting for a user of
        `org` at `audience`, no `perms`; good only at `audience`, called directly."""
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": sub or f"user-{uuid.uuid4().hex[:8]}",
            "org": org,
            "act": {"sub": caller},
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(payload, self.key, algorithm="EdDSA", headers={"kid": self.kid})
        return {"Authorization": f"Bearer {token}"}
