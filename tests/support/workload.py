"""A calling target in tests: SERVICE actions (coder.shared.target.Access) admit only the workload token
of a target whose descriptor grants them, sent to the callee directly (the gateway takes none)."""

from __future__ import annotations

from typing import Any

import httpx
import jwt

from coder.shared import context
from coder.shared.errors import Unauthorized
from coder.shared.http import ServiceClients
from coder.shared.target import Descriptor
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

# Stands for the targets that use budget and resources for a user (ai, execution): granted the SERVICE
# actions of usage and resources. The `spender` and `reserver` fixtures (tests/conftest.py) make the
# platform know it for one test.
SPENDER = Descriptor(
    name="spender",
    port=3998,
    title="Spends budget and reserves resources for a user (tests)",
    package="coder.tests.support.spender",
    needs=frozenset(),
    grants=("usage:reserve", "resources:reserve"),
)


async def direct(
    p: Platform, target: str, method: str, path: str, w: dict[str, str], **kwargs: Any
) -> httpx.Response:
    """`target` called at `path` (from its root: `/v1/...`) directly, as a calling target does, with `w`
    a workload token's headers."""
    transport = httpx.ASGITransport(app=p.runtime.local_apps[target])
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{target}") as client:
        return await client.request(method, path, headers=w, **kwargs)


def sign_workload_tokens(clients: ServiceClients, signer: TestSigner) -> None:
    """Workload tokens for the platform fixture's targets, minted by the test signer (the only key its
    JWKS trusts) instead of the gateway's own keys: what the gateway's exchange would answer for the
    user of the current request (the exchange itself is tested in tests/gateway/test_workload.py)."""

    async def workload_token(caller: str, audience: str) -> str:
        user_token = context.bearer_token.get()
        if not user_token:
            raise Unauthorized("a bearer token is required")
        claims = jwt.decode(user_token, options={"verify_signature": False})
        headers = signer.workload_headers(claims["org"], audience=audience, caller=caller, sub=claims["sub"])
        return headers["Authorization"].removeprefix("Bearer ")

    clients.workload_token = workload_token  # type: ignore[method-assign]
