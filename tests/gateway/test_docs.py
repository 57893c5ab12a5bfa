"""`/docs`: one OpenAPI view over the gateway and every target; and the gateway's own routes keep the
contracts every endpoint keeps (401 problem without a token, named 4xx problems for bad input)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import httpx

from coder.runner import registry
from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.test_identity import assert_problem

# Reachable without a bearer token by design.
PUBLIC = re.compile(
    r"^/(auth/(signup|login|refresh|exchange|logout|revoke|providers|oidc/.*)|\.well-known/.*)$"
)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def check_one_openapi_view(client: httpx.AsyncClient, targets: Iterable[str]) -> dict[str, Any]:
    """`/docs` shows every operation of each of `targets` under `/api/<target>`, its schemas under
    `<target>.`, and every reference resolves; returns the merged document."""
    html = await client.get("/docs")
    assert html.status_code == 200 and "/docs/openapi.json" in html.text
    document: dict[str, Any] = (await client.get("/docs/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for name in targets:
        own = (await client.get(f"/api/{name}/openapi.json")).json()
        for method, path, _ in operations(own):
            assert method.lower() in document["paths"].get(f"/api/{name}{path}", {}), (name, method, path)
        assert {f"{name}.{schema}" for schema in own["components"]["schemas"]} <= set(schemas), name
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "x-unavailable-targets" not in document
    return document


async def test_docs_load_nothing_from_another_site(gw: Gateway) -> None:
    """Air-gapped, /docs still works: Swagger UI's script, style and icon are the gateway's own."""
    html = (await gw.client.get("/docs")).text
    assert not re.findall(r"(?:src|href)=[\"'](?:https?:)?//", html), "an asset from another site"
    loaded = re.findall(r"(?:src|href)=[\"'](/docs/assets/[^\"']+)", html)
    assert len(loaded) == 3, html
    for url in loaded:
        asset = await gw.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 500, url
        assert asset.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png"}
    assert b"SwaggerUIBundle" in (await gw.client.get("/docs/assets/swagger-ui-bundle.js")).content
    assert (await gw.client.get("/docs/assets/..%2Fcore.py")).status_code == 404


async def test_one_openapi_view_over_every_target(gw: Gateway) -> None:
    document = await check_one_openapi_view(gw.client, [n for n in registry.PACKAGES if n != "gateway"])
    paths = document["paths"]
    assert "/auth/login" in paths and "/api/orgs/{org_id}/members" in paths
    assert "/api/secrets/v1/secrets/{path}" in paths and any(p.startswith("/api/usage/") for p in paths)
    assert paths["/api/secrets/v1/secrets/{path}"]["put"]["tags"] == ["secrets"]
    # Behind the gateway's edge, a target operation can also answer what the edge answers.
    assert {"409", "429"} <= set(paths["/api/secrets/v1/secrets/{path}"]["put"]["responses"])
    schemas = document["components"]["schemas"]
    assert "secrets.SecretWrite" in schemas and "TokenPair" in schemas
    assert "Problem" in schemas and "secrets.Problem" in schemas


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)


async def test_gateway_routes_keep_the_contracts(gw: Gateway) -> None:
    document = (await gw.client.get("/openapi.json")).json()
    checked = 0
    for method, path, op in operations(document):
        if not PUBLIC.match(path):
            response = await gw.client.request(method, fill(path))
            assert_problem(response, 401)
        if "requestBody" in op:
            for body in (b"{not json", b"[]", b'{"unexpected": {"deeply": ["nested"]}}'):
                response = await gw.client.request(
                    method,
                    fill(path),
                    content=body,
                    headers={**gw.founder.headers, "content-type": "application/json"},
                )
                assert 400 <= response.status_code < 500, (method, path, body, response.text)
                problem = assert_problem(response, response.status_code)
                if response.status_code == 422:
                    assert all(e["field"] for e in problem["errors"]), problem
            checked += 1
    assert checked >= 15
