"""A small but real OpenID Connect provider for tests, served over HTTP on 127.0.0.1.

It speaks the authorization-code flow with PKCE the way Google does: a discovery document, an
authorize endpoint (which signs in whoever `login_hint` names, instead of showing a login page), a
token endpoint that checks the client secret, the redirect URI and the PKCE verifier, and a JWKS.
Tests can make it misbehave (`tamper`, `foreign_key`) to see the gateway refuse bad ID tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from coder.shared.devservers import free_port


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, in a thread of its own."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the test server did not stop"


class OidcProvider:
    def __init__(
        self,
        client_id: str = "coder-test-client",
        client_secret: str = "test-client-secret",  # noqa: S107
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "idp-key-1"
        self.codes: dict[str, dict[str, Any]] = {}
        # login_hint -> extra claims of that person (e.g. {"email_verified": False}).
        self.people: dict[str, dict[str, Any]] = {}
        # Overrides for the claims of the next ID tokens; the test that sets them clears them.
        self.tamper: dict[str, Any] = {}
        self.foreign_key = False
        self.token_requests: list[dict[str, str]] = []
        self._server = ServerThread(
            Starlette(
                routes=[
                    Route("/.well-known/openid-configuration", self.discovery),
                    Route("/authorize", self.authorize),
                    Route("/token", self.token, methods=["POST"]),
                    Route("/jwks", self.jwks),
                ]
            )
        )
        self.issuer = self._server.url

    def start(self) -> OidcProvider:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def subject_of(self, email: str) -> str:
        return "sub-" + hashlib.sha256(email.encode()).hexdigest()[:16]

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return JSONResponse({"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE S256 required"}, 400)
        for needed in ("state", "nonce", "redirect_uri", "login_hint"):
            if not q.get(needed):
                return JSONResponse(
                    {"error": "invalid_request", "error_description": f"{needed} missing"}, 400
                )
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "email": q["login_hint"],
            "nonce": q["nonce"],
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
        }
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 302)

    async def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.token_requests.append(form)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown code"}, 400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400
            )
        now = int(time.time())
        email = grant["email"]
        claims = {
            "iss": self.issuer,
            "sub": self.subject_of(email),
            "aud": self.client_id,
            "azp": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            "email": email,
            "email_verified": True,
            "name": email.split("@")[0].title(),
            **self.people.get(email, {}),
            **self.tamper,
        }
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if self.foreign_key else self.key
        id_token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            }
        )
