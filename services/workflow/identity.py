"""Acting for a user after their request has ended.

A step runs in the background, with no request token. When a run starts (or a definition with a
schedule or a trigger is saved), workflow takes a *delegation* from the gateway with the user's own
token and its workload secret: a gateway-signed credential naming the user, their org, their session
and their permissions, bound to workflow and useless without workflow's secret. Each step trades it
at the gateway for a short-lived access token of that user (never more permissions than the user's,
refused once the user logs out, leaves the org or changes role: the gateway checks its revocation list
at each trade). See gateway/routes/workload.py and docs/services/workflow.md, "Identity".
"""

from __future__ import annotations

import time

from coder.shared.errors import Problem, Unavailable
from coder.shared.http import DELEGATED_TOKEN_PATH, DELEGATION_PATH, WORKLOAD_RENEW_SECONDS, ServiceClients

CALLER = "workflow"
CACHE_SIZE = 10_000


class DelegationRefused(Exception):
    """The gateway would not trade the run's delegation (expired, logged out, role changed...)."""


class Delegations:
    def __init__(self, clients: ServiceClients, secret: str | None) -> None:
        self._clients = clients
        self._secret = secret
        # delegation -> (access token, monotonic time to trade again)
        self._tokens: dict[str, tuple[str, float]] = {}

    def _require_secret(self) -> str:
        if not self._secret:
            raise Unavailable("workflow has no workload secret (WORKFLOW_WORKLOAD_SECRET) in this process")
        return self._secret

    async def take(self, ttl_seconds: int) -> str:
        """A delegation for the user of the current request (whose token the gateway client forwards)."""
        secret = self._require_secret()
        response = await self._clients.client("gateway").post(
            DELEGATION_PATH, json={"caller": CALLER, "secret": secret, "ttl_seconds": ttl_seconds}
        )
        if response.status_code in (401, 403):
            problem = response.json()
            slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
            raise Problem(
                problem.get("detail"), status=response.status_code, slug=slug, title=problem.get("title")
            )
        response.raise_for_status()
        delegation: str = response.json()["delegation"]
        return delegation

    async def token(self, delegation: str) -> str:
        """An access token of the delegation's user, for a step to call a target with."""
        now = time.monotonic()
        cached = self._tokens.get(delegation)
        if cached is not None and now < cached[1]:
            return cached[0]
        secret = self._require_secret()
        response = await self._clients.client("gateway").post(
            DELEGATED_TOKEN_PATH,
            json={"caller": CALLER, "secret": secret, "delegation": delegation},
        )
        if response.status_code in (401, 403):
            raise DelegationRefused(str(response.json().get("detail", "refused")))
        response.raise_for_status()
        answer = response.json()
        if len(self._tokens) >= CACHE_SIZE:
            self._tokens = {k: v for k, v in self._tokens.items() if now < v[1]}
        token: str = answer["token"]
        self._tokens[delegation] = (token, now + float(answer["expires_in"]) - WORKLOAD_RENEW_SECONDS)
        return token
