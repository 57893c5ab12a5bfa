"""mcp's resources for the cross-org suite (tests/e2e/test_cross_org.py): an audit row, made by a tool
call through `/mcp`, which another org's listing must not show."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

# A host the server answers for by default (the suite's client says `testserver`).
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
    "Host": "localhost",
}


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "usage_meters_list"}}
    called = await client.request("POST", "/mcp", json=call, headers={**headers, **MCP_HEADERS})
    assert called.status_code == 200 and "error" not in called.json(), called.text
    audit = await client.request("GET", "/v1/audit", params={"tool": "usage_meters_list"}, headers=headers)
    assert audit.status_code == 200, audit.text
    return {"audit_id": audit.json()["items"][0]["id"]}


registration = CrossOrg(create=create)
