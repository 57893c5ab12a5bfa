"""Contracts every endpoint of every target keeps, checked by walking each target's OpenAPI document:
no token is a 401 problem, malformed input is a 4xx problem naming what was wrong, never a 500."""

from __future__ import annotations

import re
from typing import Any

import pytest

from coder.runner import registry
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

SERVICES = [name for name in registry.PACKAGES if name != "gateway"]
PROBLEM = "application/problem+json"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _fill(path: str, op: dict[str, Any] | None = None) -> str:
    """`path` with a value naming nothing for each parameter; with the operation, a well-formed one
    for a UUID parameter (so the check reaches past path validation, e.g. to the cursor)."""
    formats = {
        p["name"]: p.get("schema", {}).get("format")
        for p in (op or {}).get("parameters", [])
        if p.get("in") == "path"
    }
    unknown_uuid = "00000000-0000-4000-8000-000000000000"
    return re.sub(
        r"\{([^}]+)\}",
        lambda m: unknown_uuid if formats.get(m.group(1)) == "uuid" else "does-not-exist",
        path,
    )


@pytest.mark.parametrize("service", SERVICES)
async def test_every_operation_requires_a_token(platform: Platform, service: str) -> None:
    document = (await platform.client.get(f"/api/{service}/openapi.json")).json()
    for method, path, _ in _operations(document):
        response = await platform.client.request(method, f"/api/{service}{_fill(path)}")
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("service", SERVICES)
async def test_malformed_bodies_are_named_4xx_problems(
    platform: Platform, signer: TestSigner, org: str, service: str
) -> None:
    document = (await platform.client.get(f"/api/{service}/openapi.json")).json()
    headers = {**signer.headers(org), "content-type": "application/json"}
    checked = 0
    for method, path, op in _operations(document):
        if "requestBody" not in op:
            continue
        for body in (b"{not json", b"[]", b'{"unexpected": {"deeply": ["nested"]}}'):
            response = await platform.client.request(
                method, f"/api/{service}{_fill(path)}", content=body, headers=headers
            )
            assert 400 <= response.status_code < 500, (method, path, body, response.text)
            assert response.headers["content-type"] == PROBLEM, (method, path)
            problem = response.json()
            assert problem["type"].startswith("https://") and problem["status"] == response.status_code
            if response.status_code == 422:
                assert problem["errors"] and all(e["field"] for e in problem["errors"]), problem
        checked += 1
    if not checked:
        # mcp: its one body-taking endpoint, /mcp, speaks JSON-RPC and is not in its OpenAPI.
        pytest.skip(f"no operation of {service} takes a request body")


@pytest.mark.parametrize("service", SERVICES)
async def test_malformed_query_parameters_are_named(
    platform: Platform, signer: TestSigner, org: str, service: str
) -> None:
    document = (await platform.client.get(f"/api/{service}/openapi.json")).json()
    headers = signer.headers(org)
    for method, path, op in _operations(document):
        for parameter in op.get("parameters", []):
            if parameter["in"] != "query":
                continue
            schema = parameter.get("schema", {})
            kinds = {s.get("type") for s in schema.get("anyOf", [schema])}
            if not kinds & {"integer", "number", "boolean"} and "enum" not in schema:
                continue
            response = await platform.client.request(
                method,
                f"/api/{service}{_fill(path)}",
                params={parameter["name"]: "not-a-number!"},
                headers=headers,
                json={} if "requestBody" in op else None,
            )
            assert response.status_code == 422, (method, path, parameter["name"], response.text)
            fields = [e["field"] for e in response.json()["errors"]]
            assert f"query.{parameter['name']}" in fields, (method, path, fields)


@pytest.mark.parametrize("service", SERVICES)
async def test_query_text_that_cannot_be_stored_is_named(
    platform: Platform, signer: TestSigner, org: str, service: str
) -> None:
    """A NUL or bytes that are not UTF-8 in any query parameter: a 422 naming it, before any handler."""
    document = (await platform.client.get(f"/api/{service}/openapi.json")).json()
    headers = signer.headers(org)
    checked = 0
    for method, path, op in _operations(document):
        for parameter in op.get("parameters", []):
            if parameter["in"] != "query":
                continue
            for value in ("a%00b", "a%FFb"):
                response = await platform.client.request(
                    method, f"/api/{service}{_fill(path)}?{parameter['name']}={value}", headers=headers
                )
                assert response.status_code == 422, (method, path, parameter["name"], response.text)
                fields = [e["field"] for e in response.json()["errors"]]
                assert fields == [f"query.{parameter['name']}"], (method, path, fields)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("service", SERVICES)
async def test_forged_cursors_are_400_problems_naming_the_cursor(
    platform: Platform, signer: TestSigner, org: str, service: str
) -> None:
    document = (await platform.client.get(f"/api/{service}/openapi.json")).json()
    headers = signer.headers(org)
    # Wrong types for every column kind, a wrong length, bad base64, not JSON.
    forged = ["WzEyLCAieCJd", "WyJcdTAwMDAiXQ==", "W10=", "!!!", "bm90IGpzb24="]
    checked = 0
    for method, path, op in _operations(document):
        if "cursor" not in {p["name"] for p in op.get("parameters", [])}:
            continue
        for cursor in forged:
            response = await platform.client.request(
                method, f"/api/{service}{_fill(path, op)}", params={"cursor": cursor}, headers=headers
            )
            assert response.status_code == 400, (method, path, cursor, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert [e["field"] for e in response.json()["errors"]] == ["query.cursor"]
        checked += 1
    assert checked > 0
