"""Schemathesis over every OpenAPI document the platform serves: the gateway's own routes and each
registered target's `/api/<target>/openapi.json`, through the gateway, with the token of someone who
just founded an organization (owner: every permission, so a 403 never hides a handler).

Each operation gets a bounded, derandomized number of positive and negative examples (a fixed seed:
a CI run is repeatable); every response must be no server error, a documented status with a
documented content type, and match the documented schema. The summary per target is printed
(`pytest -s` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from coder.runner import registry
from coder.tests.gateway.conftest import gateway_platform
from coder.tests.gateway.factories import Session, signup
from coder.tests.support.oidc_provider import OidcProvider

T = TypeVar("T")

EXAMPLES_PER_MODE = 13  # about 25 per operation in all
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Operations that cannot be fuzzed meaningfully, each with its reason.
EXCLUDED: dict[tuple[str, str, str], str] = {
    ("gateway", "POST", "/auth/logout"): "ends the fuzzer's own session",
    ("gateway", "POST", "/auth/revoke"): "revokes tokens, the fuzzer's own among the guessable ones",
    ("gateway", "PUT", "/users/me/password"): "a password change revokes the fuzzer's sessions",
    ("gateway", "GET", "/auth/oidc/login"): "a redirect to the external identity provider",
    ("gateway", "GET", "/auth/oidc/callback"): "needs the state of a login started at the identity provider",
    # Until a model is configured in `ai` (or without ai in the process: 503), every valid request
    # is ai's refusal; tests/services/planning/test_generate.py drives them against a fake model.
    ("planning", "POST", "/v1/plans/generate"): "asks a model of ai, which the fuzzed platform has none of",
    ("planning", "POST", "/v1/plans/{plan_id}/tasks/{task_id}/expand"): "asks a model of ai, as generate",
}


class LoopThread:
    """An event loop of its own in a thread: the platform lives there while hypothesis drives it from
    the (synchronous) test body."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


@dataclass
class Fuzzed:
    loop: LoopThread
    client: httpx.AsyncClient
    founder: Session


@pytest.fixture(scope="module")
def fuzzed(database_url: str) -> Iterator[Fuzzed]:
    oidc_provider = OidcProvider().start()
    env = {
        "GATEWAY_OIDC_ISSUER": oidc_provider.issuer,
        "GATEWAY_OIDC_CLIENT_ID": oidc_provider.client_id,
        "GATEWAY_OIDC_CLIENT_SECRET": oidc_provider.client_secret,
        "GATEWAY_OIDC_REDIRECT_URI": "http://testserver/auth/oidc/callback",
        "GATEWAY_OPEN_SIGNUP": "true",
        # The fuzzer is one client sending thousands of requests: limits would answer 429 for its handlers.
        "GATEWAY_RATE_LIMIT_PER_TOKEN": "1000000",
        "GATEWAY_RATE_LIMIT_PER_IP": "1000000",
        "GATEWAY_ACCESS_TOKEN_TTL_SECONDS": "3600",
    }
    with LoopThread() as loop:
        stack = AsyncExitStack()
        platform = loop.run(stack.enter_async_context(gateway_platform(database_url, env)))
        # A crash is a 500 answer to check, not an exception out of the transport.
        transport = httpx.ASGITransport(app=platform.app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        stack.push_async_callback(client.aclose)
        try:
            founder, _ = loop.run(signup(client, organization="Fuzzing Inc"))
            yield Fuzzed(loop, client, founder)
        finally:
            loop.run(stack.aclose())
            oidc_provider.stop()


def _httpx_kwargs(case: schemathesis.Case, base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The request schemathesis would send (its `requests` keyword arguments), for httpx."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": kwargs.get("headers"),
        "params": kwargs.get("params"),
    }
    if kwargs.get("cookies"):
        out["headers"] = {
            **(out["headers"] or {}),
            "Cookie": "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items()),
        }
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    if kwargs.get("data") is not None:
        data = kwargs["data"]
        out["content" if isinstance(data, bytes | str) else "data"] = data
    if kwargs.get("files"):
        out["files"] = kwargs["files"]
    return out


@dataclass
class Totals:
    operations: int = 0
    examples: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    examples_of: dict[str, str] = field(default_factory=dict)


def _sender(fuzzed: Fuzzed, totals: Totals, key: tuple[str, str, str], base_url: str) -> Any:
    """The body hypothesis runs per example: send it, check the response, count what failed."""
    headers = fuzzed.founder.headers

    def send(case: schemathesis.Case) -> None:
        totals.examples += 1
        response = fuzzed.loop.run(fuzzed.client.request(**_httpx_kwargs(case, base_url, headers)))
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (FailureGroup, Failure) as exc:
            failures = list(exc.exceptions) if isinstance(exc, FailureGroup) else [exc]
            for failure in failures:
                title = failure.title
                if title in {"Undocumented status code", "Server error"}:
                    title = f"{title} {response.status_code}"
                name = f"{key[1]} {key[2]}: {title}"
                totals.failures[name] += 1
                totals.examples_of.setdefault(
                    name,
                    f"{case.as_curl_command(headers={'Authorization': 'Bearer ...'})[:300]} -> "
                    f"{response.status_code} {response.text[:200]}",
                )

    return send


def _fuzz(fuzzed: Fuzzed, target: str, document: dict[str, Any], base_url: str) -> Totals:
    schema = schemathesis.openapi.from_dict(document)
    totals = Totals()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid document fails here, loudly
        key = (target, operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        totals.operations += 1
        fixed = {"org_id": fuzzed.founder.org_id} if "{org_id}" in operation.path else None

        send = _sender(fuzzed, totals, key, base_url)
        for mode in MODES:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            run = settings(
                max_examples=EXAMPLES_PER_MODE,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=strategy)(send))
            # Unsatisfiable: nothing to generate in this mode (no input to break for a negative case).
            with contextlib.suppress(Unsatisfiable):
                run()
    return totals


def _report(target: str, totals: Totals) -> str:
    lines = [
        f"{target}: {totals.operations} operations, {totals.examples} examples, "
        f"{sum(totals.failures.values())} failures"
    ]
    lines += [f"  {count:4d} x {name}" for name, count in sorted(totals.failures.items())]
    lines += [f"  e.g. {name}: {example}" for name, example in sorted(totals.examples_of.items())]
    return "\n".join(lines)


@pytest.mark.parametrize("target", list(registry.PACKAGES))
def test_every_openapi_holds_under_fuzzing(fuzzed: Fuzzed, target: str) -> None:
    prefix = "" if target == "gateway" else f"/api/{target}"
    response = fuzzed.loop.run(fuzzed.client.get(f"{prefix}/openapi.json"))
    assert response.status_code == 200, response.text
    totals = _fuzz(fuzzed, target, response.json(), f"http://testserver{prefix}")
    report = _report(target, totals)
    print(report)
    assert totals.operations > 0 and totals.examples >= totals.operations
    assert not totals.failures, report
