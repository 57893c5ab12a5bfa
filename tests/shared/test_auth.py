"""shared/auth.py: the principal dependency as any target mounts it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
from fastapi import FastAPI

from coder.shared.auth import CurrentPrincipal, TokenVerifier
from coder.shared.errors import install_problem_handlers
from coder.tests.support.tokens import AUDIENCE, ISSUER, TestSigner


def _bare_app(signer: TestSigner) -> FastAPI:
    """A route behind `CurrentPrincipal` with no middleware at all in front of it."""
    app = FastAPI()
    install_problem_handlers(app)
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks=json.loads(signer.jwks()))
    app.state.runtime = SimpleNamespace(verifier=verifier, revocations=None)

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.subject}

    return app


async def test_the_principal_comes_from_the_request_own_authorization_header(signer: TestSigner) -> None:
    transport = httpx.ASGITransport(app=_bare_app(signer))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        token = signer.token("org-a", sub="user-1")
        ok = await client.get("/me", headers={"Authorization": f"bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"sub": "user-1"}
        for header in ({}, {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer "}):
            assert (await client.get("/me", headers=header)).status_code == 401
