"""The IDE's calls: its start-up configuration, context assembly with citations within a token budget,
and chat with inline context; private items never reach an external provider."""

from __future__ import annotations

from coder.tests.services.ai.conftest import API, Org, World, chat, created, new_org

ITEMS = [
    {"kind": "file", "path": "src/app.py", "content": "x = 1\n" * 400},
    {
        "kind": "selection",
        "path": "src/app.py",
        "start_line": 3,
        "end_line": 4,
        "content": "def f():\n    pass",
    },
    {"kind": "diagnostic", "path": "src/app.py", "start_line": 3, "content": "F401 unused import"},
    {"kind": "text", "content": "internal roadmap", "private": True},
]


async def test_config_gives_models_by_role_sources_mcp_and_limits(world: World, shared: Org) -> None:
    answer = await world.client.get(f"{API}/config", headers=shared.key)
    assert answer.status_code == 200, answer.text
    config = answer.json()
    assert [m["alias"] for m in config["models"]["chat"]] == ["chat"]
    assert config["models"]["edit"][0]["alias"] == "chat"
    assert config["models"]["autocomplete"] == [
        {"alias": "autocomplete", "capabilities": ["fim"], "context_window": 128000}
    ]
    assert config["models"]["embed"] == []
    assert config["context_sources"][0]["name"] == "client"
    assert config["mcp_url"] == "/api/mcp/mcp" and config["user_id"] == shared.owner.user_id


async def test_context_is_cited_within_budget_and_private_items_stay_home(world: World, shared: Org) -> None:
    body = {"query": "why unused?", "items": ITEMS, "max_tokens": 60}
    answer = await world.client.post(f"{API}/context", json=body, headers=shared.key)
    assert answer.status_code == 200, answer.text
    context = answer.json()
    kinds = [p["citation"]["source"] for p in context["pieces"]]
    assert kinds == ["client:selection", "client:diagnostic", "client:file"]  # by priority
    assert context["pieces"][0]["citation"] == {
        "index": 1,
        "source": "client:selection",
        "path": "src/app.py",
        "start_line": 3,
        "end_line": 4,
    }
    assert context["tokens"] == 60 and context["pieces"][-1]["truncated"] is True
    assert any("private" in why for why in context["left_out"])
    assert "internal roadmap" not in answer.text

    inside = await world.client.post(f"{API}/context", json={**body, "external": False}, headers=shared.key)
    assert "internal roadmap" in inside.text


async def test_chat_with_inline_context_and_the_private_rule(world: World) -> None:
    org = await new_org(world, {"chat": {"deployments": ["gpt"]}, "local": {"deployments": ["local"]}})
    # `local` runs on a provider inside the organization.
    patched = await world.client.patch(
        f"{API}/providers/{org.providers['ollama']}", json={"external": False}, headers=org.headers
    )
    assert patched.status_code == 200, patched.text
    context = {"items": ITEMS[1:], "max_tokens": 200}
    assert (await chat(world, org, "chat", context=context)).status_code == 200
    system = world.provider.seen("/v1/chat/completions")[-1].body["messages"][0]
    assert system["role"] == "system" and "[1] src/app.py:3-4" in system["content"]
    assert "internal roadmap" not in system["content"]
    assert "context" not in world.provider.seen("/v1/chat/completions")[-1].body

    assert (await chat(world, org, "local", context=context)).status_code == 200
    assert (
        "internal roadmap" in world.provider.seen("/v1/chat/completions")[-1].body["messages"][0]["content"]
    )


async def test_catalogue_rules(world: World) -> None:
    org = await new_org(world)
    h = org.headers
    provider = await world.client.get(f"{API}/providers/{org.providers['openai']}", headers=h)
    assert provider.json()["key_path"] == "providers/openai"
    assert world.provider.openai_key not in provider.text  # the key itself is never returned
    again = await world.client.post(
        f"{API}/providers", json={"name": "openai", "kind": "openai", "base_url": "http://x/v1"}, headers=h
    )
    assert again.status_code == 409 and again.json()["field"] == "name"
    unknown = await world.client.post(
        f"{API}/deployments", json={"name": "z", "provider_id": org.groups["chat"], "model": "m"}, headers=h
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "provider_id"
    in_use = await world.client.delete(f"{API}/deployments/{org.deployments['gpt']}", headers=h)
    assert in_use.status_code == 409 and "chat" in in_use.json()["detail"]
    used = await world.client.delete(f"{API}/providers/{org.providers['openai']}", headers=h)
    assert used.status_code == 409
    loop = await world.client.patch(
        f"{API}/groups/{org.groups['chat']}", json={"fallbacks": ["chat"]}, headers=h
    )
    assert loop.status_code == 422 and loop.json()["errors"][0]["field"] == "fallbacks"
    fim = await world.client.post(
        f"{API}/completions", json={"model": "chat", "prompt": "a", "suffix": "b"}, headers=org.key
    )
    assert (
        fim.status_code == 422 and fim.json()["errors"][0]["field"] == "model"
    )  # chat has no fim deployment
    # A personal token scoped to ai:use calls models but cannot change the catalogue.
    denied = await world.client.post(f"{API}/groups", json={"alias": "x", "deployments": []}, headers=org.key)
    assert denied.status_code == 403
    group = await created(
        world.client, f"{API}/groups", {"alias": "solo", "deployments": [org.deployments["gpt"]]}, h
    )
    assert (await world.client.delete(f"{API}/groups/{group['id']}", headers=h)).status_code == 204
