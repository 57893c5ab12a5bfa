"""mcp through the gateway, spoken to by the official `mcp` client (streamable HTTP + ClientSession)
with personal access tokens: the tools other targets declare, their schemas and annotations, calls
decided by the owning target's permission check, the audit trail, and the transport's own checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import jsonschema  # type: ignore[import-untyped]
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from coder.runner import registry
from coder.services.mcp.catalog import offered
from coder.tests.gateway.conftest import gateway_platform
from coder.tests.gateway.factories import Session, bearer, signup
from coder.tests.support.platform import Platform

MCP_URL = "http://testserver/api/mcp/mcp"


def text(result: types.CallToolResult | types.GetPromptResult | types.ReadResourceResult) -> str:
    """The text of an answer's first block."""
    if isinstance(result, types.CallToolResult):
        block: Any = result.content[0]
    elif isinstance(result, types.GetPromptResult):
        block = result.messages[0].content
    else:
        block = result.contents[0]
    assert isinstance(block, types.TextContent | types.TextResourceContents), block
    return block.text


@dataclass
class World:
    platform: Platform
    owner: Session
    secret_path: str
    meter_slug: str

    @property
    def client(self) -> httpx.AsyncClient:
        return self.platform.client

    async def pat(self, *scopes: str) -> str:
        response = await self.client.post(
            "/auth/tokens",
            json={"name": f"agent-{uuid.uuid4().hex[:6]}", "scopes": list(scopes), "expires_in_days": 1},
            headers=self.owner.headers,
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    @asynccontextmanager
    async def mcp(self, token: str, **headers: str) -> AsyncIterator[ClientSession]:
        """The official client, its HTTP going through the gateway app in-process."""
        http = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=self.platform.app),
            headers={"Authorization": f"Bearer {token}", **headers},
            timeout=30,
        )
        async with (
            http,
            streamable_http_client(MCP_URL, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@pytest.fixture(scope="module")
async def world(database_url: str) -> AsyncIterator[World]:
    """The platform as deployed: tokens signed by the gateway itself (so personal access tokens work)."""
    env = {"GATEWAY_OPEN_SIGNUP": "true", "MCP_ALLOWED_HOSTS": json.dumps(["testserver"])}
    async with gateway_platform(database_url, env) as platform:
        owner, _ = await signup(platform.client, organization="Agents Inc")
        path = f"providers/openai-{uuid.uuid4().hex[:6]}"
        written = await platform.client.put(
            f"/api/secrets/v1/secrets/{path}",
            json={"data": {"api_key": "sk-never-shown"}},
            headers=owner.headers,
        )
        assert written.status_code == 200, written.text
        slug = f"tokens-{uuid.uuid4().hex[:6]}"
        meter = await platform.client.post(
            "/api/usage/v1/meters",
            json={
                "slug": slug,
                "name": "Tokens",
                "event_type": "ai.request.completed",
                "aggregation": "sum",
                "value_property": "tokens",
                "group_by": ["model"],
            },
            headers=owner.headers,
        )
        assert meter.status_code == 201, meter.text
        yield World(platform, owner, path, slug)


async def test_lists_the_declared_tools_with_schemas_and_annotations(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read", "secrets:list")) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    # Every tool any registered target declares resolves to an operation of that target's OpenAPI.
    assert set(tools) == set(offered(registry.descriptors()))
    assert {"usage_meters_list", "usage_meter_query", "usage_budgets_list", "secrets_list"} <= set(tools)
    listing = tools["secrets_list"]
    assert listing.annotations is not None
    assert listing.annotations.read_only_hint is True and listing.annotations.destructive_hint is False
    assert {"prefix", "project", "environment", "limit", "cursor"} <= set(listing.input_schema["properties"])
    # Every schema stands alone: its references resolve inside it, and it is valid JSON Schema.
    budgets = tools["usage_budgets_list"].input_schema
    assert "#/components/" not in json.dumps(budgets)
    jsonschema.Draft202012Validator.check_schema(budgets)
    jsonschema.validate({"scope": "team", "limit": 5}, budgets)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"scope": "galaxy"}, budgets)
    assert tools["usage_meter_query"].input_schema["required"] == ["slug"]


async def test_calls_tools_for_the_user_and_never_shows_secret_values(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read", "secrets:list")) as session:
        secrets = await session.call_tool("secrets_list", {"prefix": "providers/"})
        meters = await session.call_tool("usage_meters_list", {"limit": 10})
        metadata = await session.call_tool("secrets_metadata_read", {"path": world.secret_path})
    assert not secrets.is_error, secrets.content
    assert world.secret_path in [item["path"] for item in secrets.structured_content["items"]]
    assert json.loads(text(secrets)) == secrets.structured_content
    assert not meters.is_error, meters.content
    assert [m["slug"] for m in meters.structured_content["items"]] == [world.meter_slug]
    assert not metadata.is_error and metadata.structured_content["current_version"] == 1
    for answer in (secrets, metadata):
        assert "sk-never-shown" not in text(answer)


async def test_a_tool_the_token_lacks_the_permission_for_is_refused(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read")) as session:
        refused = await session.call_tool("secrets_list", {})
        allowed = await session.call_tool("usage_budgets_list", {})
    assert refused.is_error
    assert "403" in text(refused) and "secrets:list" in text(refused)
    assert not allowed.is_error and allowed.structured_content == {"items": [], "next_cursor": None}


async def test_bad_arguments_are_a_tool_error_naming_the_argument(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read")) as session:
        unknown = await session.call_tool("usage_meters_list", {"colour": "red"})
        missing = await session.call_tool("usage_meter_query", {})
        invalid = await session.call_tool("usage_meters_list", {"limit": 0})
        nowhere = await session.call_tool("no_such_tool", {})
    async with world.mcp(await world.pat("mcp:use", "secrets:list")) as session:
        elsewhere = await session.call_tool("secrets_metadata_read", {"path": "../../audit"})
    assert unknown.is_error and "colour" in text(unknown)
    assert missing.is_error and "slug: required" in text(missing)
    # The target's own validation answers, the field named in its problem.
    assert invalid.is_error and "422" in text(invalid) and "query.limit" in text(invalid)
    assert nowhere.is_error and "no_such_tool" in text(nowhere)
    assert elsewhere.is_error and "path: must not contain" in text(elsewhere)


async def test_resources_and_prompts(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read")) as session:
        uris = {str(r.uri) for r in (await session.list_resources()).resources}
        me = json.loads(text(await session.read_resource("coder://me")))
        targets = json.loads(text(await session.read_resource("coder://platform/targets")))
        prompts = {p.name for p in (await session.list_prompts()).prompts}
        prompt = await session.get_prompt("usage_review", {"focus": "the claude models"})
    assert uris == {"coder://me", "coder://platform/targets"}
    assert me["organization"] == world.owner.org_id and me["subject"] == world.owner.user_id
    assert set(me["permissions"]) == {"mcp:use", "usage:read"}
    by_name = {t["name"]: t for t in targets}
    assert "usage_budgets_list" in by_name["usage"]["tools"] and by_name["mcp"]["tools"] == []
    assert {"usage_review", "secrets_inventory"} <= prompts
    assert "usage_budgets_list" in text(prompt) and "the claude models" in text(prompt)


async def test_calls_are_audited_per_org(world: World) -> None:
    async with world.mcp(await world.pat("mcp:use", "usage:read")) as session:
        await session.call_tool("usage_meters_list", {})
        await session.call_tool("secrets_list", {"prefix": "x"})
    audit = await world.client.get("/api/mcp/v1/audit", params={"limit": 2}, headers=world.owner.headers)
    assert audit.status_code == 200, audit.text
    newest, older = audit.json()["items"]
    assert (newest["tool"], newest["outcome"], newest["status"]) == ("secrets_list", "denied", 403)
    assert newest["details"]["required"] == "secrets:list" and newest["details"]["arguments"] == ["prefix"]
    assert (older["tool"], older["outcome"], older["status"]) == ("usage_meters_list", "ok", 200)
    assert newest["actor"] == world.owner.user_id and newest["target"] == "secrets"
    assert audit.json()["next_cursor"]
    # Another org sees none of it.
    stranger, _ = await signup(world.client, organization="Elsewhere")
    theirs = await world.client.get("/api/mcp/v1/audit", headers=stranger.headers)
    assert theirs.status_code == 200 and theirs.json()["items"] == []


def _rpc(method: str = "tools/list") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


async def test_refusals_before_the_protocol(world: World) -> None:
    # No token, or a bad one: the gateway refuses before mcp is reached, naming mcp's metadata.
    metadata = 'Bearer resource_metadata="http://testserver/api/mcp/.well-known/oauth-protected-resource"'
    for credentials in ({}, bearer("not-a-jwt"), bearer("cdr_pat_unknown")):
        anonymous = await world.client.post(
            "/api/mcp/mcp", json=_rpc(), headers={**MCP_HEADERS, **credentials}
        )
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["www-authenticate"] == metadata
    # Other targets' challenges stay plain.
    assert (await world.client.get("/api/usage/v1/meters")).headers["www-authenticate"] == "Bearer"
    # A token that reaches mcp (mcp:audit) but may not use it.
    auditor = bearer(await world.pat("mcp:audit"))
    refused = await world.client.post("/api/mcp/mcp", json=_rpc(), headers={**MCP_HEADERS, **auditor})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["required"] == "mcp:use"
    # A browser page of another origin (DNS rebinding): refused whatever the token.
    user = bearer(await world.pat("mcp:use"))
    evil = await world.client.post(
        "/api/mcp/mcp", json=_rpc(), headers={**MCP_HEADERS, **user, "Origin": "http://evil.example"}
    )
    assert evil.status_code == 403 and evil.json()["type"].endswith("/origin-forbidden")
    local = await world.client.post(
        "/api/mcp/mcp", json=_rpc(), headers={**MCP_HEADERS, **user, "Origin": "http://localhost:5173"}
    )
    assert local.status_code == 200, local.text
    assert {t["name"] for t in local.json()["result"]["tools"]} >= {"secrets_list"}
    # Stateless: no GET stream, no session to delete.
    for method in ("GET", "DELETE"):
        answer = await world.client.request(method, "/api/mcp/mcp", headers={**MCP_HEADERS, **user})
        assert answer.status_code == 405 and answer.headers["content-type"] == "application/problem+json"
        assert "POST" in answer.headers["allow"]


async def test_host_check_and_the_challenge_at_mcp_itself(world: World) -> None:
    """Called directly (not through the gateway), as a client inside the cluster would."""
    app = world.platform.runtime.local_apps["mcp"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as direct:
        missing = await direct.post("/mcp", json=_rpc(), headers=MCP_HEADERS)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == (
            'Bearer resource_metadata="http://testserver/.well-known/oauth-protected-resource"'
        )
        forged = await direct.post("/mcp", json=_rpc(), headers={**MCP_HEADERS, **bearer("not-a-jwt")})
        assert forged.status_code == 401 and 'error="invalid_token"' in forged.headers["www-authenticate"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://attacker.example"
    ) as c:
        rebound = await c.post(
            "/mcp", json=_rpc(), headers={**MCP_HEADERS, **bearer(await world.pat("mcp:use"))}
        )
    assert rebound.status_code == 421 and rebound.headers["content-type"] == "application/problem+json"


async def test_protected_resource_metadata_through_the_gateway(world: World) -> None:
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        answer = await world.client.get(f"/api/mcp{path}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "resource": MCP_URL,
            "authorization_servers": ["http://testserver"],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["mcp:use"],
            "resource_name": "Coder Platform",
            "resource_documentation": "http://testserver/docs",
        }
