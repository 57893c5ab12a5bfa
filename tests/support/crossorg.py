"""What a target registers for the cross-org suite (tests/e2e/test_cross_org.py), in
`tests/services/<target>/crossorg.py` as `registration = CrossOrg(...)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class TargetClient:
    """The platform's client at one target's root (`/api/<target>`)."""

    client: httpx.AsyncClient
    prefix: str

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, self.prefix + path, **kwargs)


Operation = tuple[str, str]  # (METHOD, path as in the target's OpenAPI, e.g. "/v1/budgets/{budget_id}")


@dataclass(frozen=True)
class CrossOrg:
    # Creates one of each of the target's resources as the org whose headers it gets; returns the
    # value of every path parameter naming them.
    create: Callable[[TargetClient, dict[str, str]], Awaitable[dict[str, str]]]
    # A valid body for each addressed operation that takes one, so the answer is about the address.
    bodies: dict[Operation, Any] = field(default_factory=dict)
    # Operations with no path parameter that are not lists (GET): why none can reach another org's row.
    unaddressed: dict[Operation, str] = field(default_factory=dict)
    # Addressed operations that write at their address in the caller's own org (a PUT of a path):
    # for them the suite checks that the first org's resource is unchanged instead of a 404.
    own_namespace: dict[Operation, str] = field(default_factory=dict)
    # GETs whose answer changes with the clock, left out of the before/after comparison.
    volatile: frozenset[Operation] = frozenset()
