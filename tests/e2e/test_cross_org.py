"""Another org's resources do not exist: each target registers how to create one of each of its
resources (`tests/services/<target>/crossorg.py`); as org A the suite creates them, then as org B
it tries every operation of the target's OpenAPI that addresses one. Each answer is a 404 problem
identical to the answer for an unknown id, and org A's resources read the same afterwards. Lists
answer org B without them. An operation nobody registered how to try fails the suite, so a new
target (or a new route) joins by registering."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import httpx
import jwt
import pytest

from coder.shared.target import Descriptor
from coder.tests.e2e.test_contracts import PROBLEM, SERVICES, _operations
from coder.tests.gateway import crossorg as gateway_crossorg
from coder.tests.gateway.conftest import gateway_env, gateway_platform
from coder.tests.gateway.factories import member, owner
from coder.tests.support.crossorg import PARAMETER, CrossOrg, Operation, TargetClient
from coder.tests.support.oidc_provider import OidcProvider
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


def _registration(service: str) -> CrossOrg:
    try:
        module = importlib.import_module(f"coder.tests.services.{service}.crossorg")
    except ModuleNotFoundError:
        pytest.fail(f"{service} has no tests/services/{service}/crossorg.py registering its resources")
    registration: CrossOrg = module.registration
    return registration


def _unknown(value: str) -> str:
    """A value of the same kind naming nothing."""
    if value.isdigit():  # a number in its parent's scope (planning's task ids): another number
        return str(int(value) + 1_000_000)
    try:
        uuid.UUID(value)
    except ValueError:
        return f"unknown-{uuid.uuid4().hex[:8]}"
    return str(uuid.uuid4())


def _address(path: str, values: dict[str, str]) -> str:
    missing = set(PARAMETER.findall(path)) - set(values)
    assert not missing, f"{path}: the registration's create() names no {', '.join(sorted(missing))}"
    return PARAMETER.sub(lambda m: values[m.group(1)], path)


def _request(registration: CrossOrg, method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    body = registration.bodies.get((method, path))
    return {"headers": headers} if body is None else {"headers": headers, "json": body}


def _answer(response: Any, values: dict[str, str]) -> tuple[int, str, str]:
    """Status, content type and body, with the addressed values written as their parameter names."""
    text = response.text
    # Longest first: a short value (a version, "3") may occur inside a longer one (a UUID).
    for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
        text = text.replace(value, f"{{{name}}}")
    return response.status_code, response.headers.get("content-type", ""), text


async def test_another_orgs_gateway_resources_do_not_exist(database_url: str) -> None:
    """The gateway's own org resources (`/api/orgs/{org_id}/...`, `/api/teams/...`, personal tokens),
    with people signed up through its own flows. Org B is tried by its owner (no 403 can hide an
    answer) and by a plain member: 404 too, not a 403 that tells an existing team from none."""
    provider = OidcProvider().start()
    try:
        async with gateway_platform(database_url, gateway_env(provider)) as platform:
            api = TargetClient(platform.client, "")
            boss_b = await owner(platform.client)
            for b in (boss_b, await member(platform.client, boss_b, "member")):
                a = await owner(platform.client)
                await check_registration(api, a.headers, b.headers, gateway_crossorg.registration)
    finally:
        provider.stop()


@pytest.mark.parametrize("service", SERVICES)
async def test_another_orgs_resources_do_not_exist(
    platform: Platform, signer: TestSigner, service: str
) -> None:
    await check_another_orgs_resources_do_not_exist(platform, signer, service, _registration(service))


async def check_another_orgs_resources_do_not_exist(
    platform: Platform, signer: TestSigner, service: str, registration: CrossOrg
) -> None:
    """The suite's check of one target, given its registration (tests/runner/test_recipe.py reuses it)."""
    # A target granted the registration's SERVICE actions, known to the platform for this check only.
    caller = Descriptor(
        name="crossorg-caller",
        port=3997,
        title="Calls SERVICE actions for the cross-org suite",
        package="coder.tests.e2e.crossorg_caller",
        needs=frozenset(),
        grants=tuple(sorted(set(registration.service.values()))),
    )

    def workload(headers: dict[str, str]) -> dict[str, str]:
        claims = jwt.decode(headers["Authorization"].split()[1], options={"verify_signature": False})
        return signer.workload_headers(claims["org"], audience=service, caller=caller.name, sub=claims["sub"])

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=platform.runtime.local_apps[service]), base_url=f"http://{service}"
    ) as direct:
        api = TargetClient(
            platform.client, f"/api/{service}", frozenset(registration.service), direct, workload
        )
        platform.runtime.descriptors[caller.name] = caller
        try:
            org_a, org_b = f"org-{uuid.uuid4().hex[:12]}", f"org-{uuid.uuid4().hex[:12]}"
            await check_registration(api, signer.headers(org_a), signer.headers(org_b), registration)
        finally:
            del platform.runtime.descriptors[caller.name]


async def check_registration(
    api: TargetClient, a: dict[str, str], b: dict[str, str], registration: CrossOrg
) -> None:
    """The check itself: `a` and `b` are the headers of two people, each with every permission in an
    organization of their own."""
    document = (await api.request("GET", "/openapi.json")).json()
    owned = await registration.create(api, a)
    unknown = {name: _unknown(value) for name, value in owned.items()}

    operations: list[Operation] = [(method, path) for method, path, _ in _operations(document)]
    addressed = [(m, p, op) for m, p, op in _operations(document) if PARAMETER.search(p)]
    reads = [(m, p) for m, p, _ in addressed if m == "GET" and (m, p) not in registration.volatile]

    async def snapshot() -> dict[Operation, tuple[int, str, str]]:
        return {(m, p): _answer(await api.request(m, _address(p, owned), headers=a), {}) for m, p in reads}

    before = await snapshot()
    assert all(status == 200 for status, _, _ in before.values()), before

    for method, path, op in addressed:
        assert "requestBody" not in op or (method, path) in registration.bodies, (
            f"register a valid body for {method} {path}"
        )
        if (method, path) in registration.own_namespace:
            continue
        kwargs = _request(registration, method, path, b)
        theirs = await api.request(method, _address(path, owned), **kwargs)
        nobodys = await api.request(method, _address(path, unknown), **kwargs)
        assert theirs.status_code == 404, (method, path, theirs.text)
        assert theirs.headers["content-type"] == PROBLEM, (method, path)
        assert _answer(theirs, owned) == _answer(nobodys, unknown), (method, path)

    for method, path, op in _operations(document):
        if PARAMETER.search(path) or (method, path) in registration.unaddressed:
            continue
        assert method == "GET" and "requestBody" not in op, (
            f"{method} {path} addresses no resource: register in `unaddressed` why it cannot reach another org's"
        )
        listed = await api.request(method, path, headers=b)
        assert listed.status_code == 200, (method, path, listed.text)
        leaked = [value for value in owned.values() if value in listed.text]
        assert not leaked, (method, path, leaked)

    # Last: these give org B a resource of its own at the same address.
    for method, path in registration.own_namespace:
        written = await api.request(method, _address(path, owned), **_request(registration, method, path, b))
        assert written.status_code < 300, (method, path, written.text)

    # Whatever org B sent, org A's resources answer A exactly as before.
    assert await snapshot() == before

    stale = (
        set(registration.bodies)
        | set(registration.unaddressed)
        | set(registration.own_namespace)
        | set(registration.service)
    ) - set(operations)
    assert not stale, f"registered operations the OpenAPI does not have: {sorted(stale)}"
