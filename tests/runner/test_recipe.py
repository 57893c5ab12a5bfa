"""The recipe for a new service (docs/architecture.md, "A new service") is all a new service needs.

`tests/runner/notes/` is a throwaway target made of exactly the recipe's files. Registered with one
entry in `runner.registry.PACKAGES` and nothing else, it is migrated on a fresh database, served by
the platform, and held to the same checks the platform-wide suites hold every target to: the
contracts of every endpoint (tests/e2e/test_contracts.py), the cross-org suite
(tests/e2e/test_cross_org.py) and the one `/docs` view (tests/gateway/test_docs.py). Should a new
target ever need an edit outside its package and that line, this test fails.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from coder.gateway.roles import builtin_permissions
from coder.runner import registry
from coder.tests.e2e import test_contracts
from coder.tests.e2e.test_cross_org import check_another_orgs_resources_do_not_exist
from coder.tests.gateway.test_docs import check_one_openapi_view
from coder.tests.runner import test_registry
from coder.tests.runner.notes.crossorg import registration
from coder.tests.shared.migrations.test_ops import (
    check_event_tables_come_from_the_shared_operation,
    check_the_migrated_schema_is_the_models,
)
from coder.tests.support.databases import create_database, drop_database
from coder.tests.support.platform import Platform, make_settings, running, wait_until
from coder.tests.support.tokens import TestSigner

NAME = "notes"
PACKAGE = "coder.tests.runner.notes"
FOLDER = Path(__file__).resolve().parent / NAME
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
# The platform-wide contract checks, each run for one target: every `test_*` of the suite.
CONTRACT_CHECKS = [f for name, f in vars(test_contracts).items() if name.startswith("test_")]
assert CONTRACT_CHECKS
# Every target's invariants as tests/runner/test_registry.py checks them over the registry.
REGISTRY_INVARIANTS = [
    test_registry.test_every_table_and_constraint_is_prefixed_by_its_target,
    test_registry.test_every_target_with_tables_has_migrations,
    test_registry.test_wiring_carries_its_descriptor,
    test_registry.test_descriptors_name_every_permission_their_code_checks,
    test_registry.test_descriptors_name_every_event_their_code_emits,
]


@pytest.fixture
def registered() -> Iterator[None]:
    """The one registry line, for this test only; the descriptors are read again with and without it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.PACKAGES, NAME, PACKAGE)
        registry.descriptors.cache_clear()
        try:
            yield
        finally:
            registry.descriptors.cache_clear()
    registry.descriptors.cache_clear()


@pytest.fixture(params=["inprocess", "real"])
async def notes_platform(
    request: pytest.FixtureRequest, registered: None, database_url: str, signer: TestSigner
) -> AsyncIterator[Platform]:
    """The platform with notes among its targets, on a database of its own migrated to head."""
    overrides: dict[str, object] = {}
    if request.param == "real":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
        overrides["amqp_url"] = request.getfixturevalue("rabbit_server").url
    url = await create_database(database_url, "coder_recipe")
    try:
        async with running(make_settings(url, signer, **overrides), request.param) as platform:
            if platform.runtime.bus is not None:
                await wait_until(platform.runtime.bus.is_ready, what="the event bus to connect")
            yield platform
    finally:
        await drop_database(url)


def test_the_throwaway_target_is_exactly_the_recipe() -> None:
    """The package holds the files the recipe names, and the recipe names no file it lacks."""
    recipe = ARCHITECTURE.read_text().split("### A new service", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+\.py|migrations/0001_\w+\.py)`", recipe))
    files = {str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*.py")} - {"__init__.py"}
    # The test-side registration and the contracts of a real target live elsewhere (see the recipe).
    assert files - {"crossorg.py", "contracts.py"} <= named, files
    assert {"descriptor.py", "models.py", "schemas.py", "api.py", "target.py", "crossorg.py"} <= named


async def test_a_target_registered_by_one_line_passes_every_suite(
    registered: None, notes_platform: Platform, signer: TestSigner
) -> None:
    platform = notes_platform
    assert registry.wiring(NAME).descriptor.package == PACKAGE
    org = f"org-{uuid.uuid4().hex[:12]}"
    headers = signer.headers(org)

    # Its own routes work: create (emitting its event), list by pages, get, update, delete.
    created = [
        (await platform.client.post(f"/api/{NAME}/v1/notes", json={"title": f"n{i}"}, headers=headers))
        for i in range(3)
    ]
    assert [r.status_code for r in created] == [201] * 3, created[0].text
    ids = [r.json()["id"] for r in created]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await platform.client.get(f"/api/{NAME}/v1/notes", params=params, headers=headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    note = f"/api/{NAME}/v1/notes/{ids[0]}"
    updated = await platform.client.patch(note, json={"body": "more"}, headers=headers)
    assert updated.status_code == 200 and updated.json()["body"] == "more" and updated.json()["title"] == "n0"
    assert (await platform.client.delete(note, headers=headers)).status_code == 204
    assert (await platform.client.get(note, headers=headers)).status_code == 404
    refused = await platform.client.post(f"/api/{NAME}/v1/notes", json={"title": ""}, headers=headers)
    assert refused.status_code == 422 and [e["field"] for e in refused.json()["errors"]] == ["body.title"]

    # Its permissions reach the built-in roles from its descriptor: a viewer reads, only a member writes.
    viewer = signer.headers(org, builtin_permissions("viewer", registry.descriptors().values()))
    member = signer.headers(org, builtin_permissions("member", registry.descriptors().values()))
    assert (await platform.client.get(f"/api/{NAME}/v1/notes", headers=viewer)).status_code == 200
    denied = await platform.client.post(f"/api/{NAME}/v1/notes", json={"title": "x"}, headers=viewer)
    assert denied.status_code == 403 and "notes:write" in denied.text, denied.text
    allowed = await platform.client.post(f"/api/{NAME}/v1/notes", json={"title": "x"}, headers=member)
    assert allowed.status_code == 201, allowed.text

    # Its event left through its outbox, as every target's does.
    engine = platform.runtime.engine
    assert engine is not None

    async def outbox_empty() -> bool:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT count(*) FROM notes_outbox"))).scalar_one() == 0

    await wait_until(outbox_empty, what="the relay to drain notes' outbox")

    # The registry's and the migrations' invariants, on it (its port is its own: DESIGN.md's are taken).
    for invariant in REGISTRY_INVARIANTS:
        invariant()
    check_event_tables_come_from_the_shared_operation(registry.wiring(NAME))
    database = engine.url.render_as_string(hide_password=False)
    await check_the_migrated_schema_is_the_models(database, registry.wiring(NAME))

    # The platform-wide suites, on it.
    arguments: dict[str, Any] = {"platform": platform, "signer": signer, "org": org, "service": NAME}
    for check in CONTRACT_CHECKS:
        wanted = inspect.signature(check).parameters
        await check(**{name: value for name, value in arguments.items() if name in wanted})
    await check_another_orgs_resources_do_not_exist(platform, signer, NAME, registration)
    await check_one_openapi_view(platform.client, [NAME])
