"""What a target registers for the cross-org suite (tests/e2e/test_cross_org.py), in
`tests/services/<target>/crossorg.py` as `registration = CrossOrg(...)`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Operation = tuple[str, str]  # (METHOD, path as in the target's OpenAPI, e.g. "/v1/budgets/{budget_id}")

PARAMETER = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class TargetClient:
    """The platform's client at one target's root (`/api/<target>`).

    The operations in `service` (a SERVICE action's: only a calling target's workload token passes)
    go to the target directly, as a calling target sends them, with `workload(headers)`: a workload
    token for the same user and org as `headers`."""

    client: httpx.AsyncClient
    prefix: str
    service: frozenset[Operation] = frozenset()
    direct: httpx.AsyncClient | None = None
    workload: Callable[[dict[str, str]], dict[str, str]] | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.direct is not None and self.workload is not None and self._is_service(method, path):
            headers = self.workload(kwargs.pop("headers", None) or {})
            return await self.direct.request(method, path, headers=headers, **kwargs)
        return await self.client.request(method, self.prefix + path, **kwargs)

    def _is_service(self, method: str, path: str) -> bool:
        return any(
            m == method and re.fullmatch(PARAMETER.sub("[^/]+", template), path)
            for m, template in self.service
        )


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
    # Operations whose permission is a SERVICE action (operation -> that permission): the suite calls
    # them as a target granted those permissions would, directly and with a workload token.
    service: dict[Operation, str] = field(default_factory=dict)
