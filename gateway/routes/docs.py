"""`/docs`: one OpenAPI view over the gateway and every target, each target's paths under `/api/<target>`."""

from __future__ import annotations

import asyncio
import copy
import time
from functools import cache
from importlib.resources import files
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from coder.gateway.deps import GatewayDep
from coder.runner import registry
from coder.shared.deps import ClientsDep
from coder.shared.errors import NotFound, problem_responses
from coder.shared.http import ServiceClients

router = APIRouter(tags=["docs"])

CACHE_SECONDS = 30.0
FETCH_TIMEOUT = 5.0
_REF = "#/components/schemas/"


def _renamed(node: Any, prefix: str) -> Any:
    """A copy of `node` whose schema references point at the prefixed schema names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF):
                out[key] = _REF + prefix + value[len(_REF) :]
            else:
                out[key] = _renamed(value, prefix)
        return out
    if isinstance(node, list):
        return [_renamed(item, prefix) for item in node]
    return node


def merge(
    gateway: dict[str, Any], targets: dict[str, dict[str, Any]], unavailable: dict[str, str]
) -> dict[str, Any]:
    """The gateway's document plus each target's, paths prefixed `/api/<target>` and schemas `<target>.`.

    The gateway's edge stands in front of every target, so each target operation also documents
    what the edge answers (429...), as the gateway's own operations do."""
    edge = problem_responses(registry.descriptors()["gateway"].problems)
    merged = copy.deepcopy(gateway)
    merged["info"] = {**merged.get("info", {}), "title": "Coder Platform API"}
    merged.pop("servers", None)
    paths: dict[str, Any] = merged.setdefault("paths", {})
    components: dict[str, Any] = merged.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    tags: list[dict[str, Any]] = list(merged.get("tags", []))
    for name, document in targets.items():
        prefix = f"{name}."
        document = _renamed(document, prefix)
        for path, item in document.get("paths", {}).items():
            for operation in item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    operation["tags"] = [name]
                    for code, response in edge.items():
                        operation["responses"].setdefault(str(code), response)
                    if "operationId" in operation:
                        operation["operationId"] = f"{name}_{operation['operationId']}"
            paths[f"/api/{name}{path}"] = item
        for schema_name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas[prefix + schema_name] = schema
        info = document.get("info", {})
        tags.append({"name": name, "description": info.get("description") or info.get("title", name)})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT or personal access token",
    }
    merged["security"] = [{"bearer": []}]
    merged["tags"] = tags
    if unavailable:
        merged["x-unavailable-targets"] = unavailable
    return merged


async def _target_document(clients: ServiceClients, name: str) -> dict[str, Any]:
    response = await clients.client(name).get("/openapi.json", timeout=FETCH_TIMEOUT)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


@router.get("/docs/openapi.json", include_in_schema=False)
async def merged_openapi(request: Request, gateway: GatewayDep, clients: ClientsDep) -> dict[str, Any]:
    cached = gateway.docs_cache
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    names = [n for n in registry.descriptors() if n != "gateway"]
    results = await asyncio.gather(*(_target_document(clients, n) for n in names), return_exceptions=True)
    documents: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, dict):
            documents[name] = result
        elif isinstance(result, httpx.HTTPError | ValueError):
            unavailable[name] = f"{type(result).__name__}: {result}"[:200]
        elif isinstance(result, BaseException):
            raise result
    merged = merge(request.app.openapi(), documents, unavailable)
    # Only a complete view is kept: a target that was down is asked again next time.
    if not unavailable:
        gateway.docs_cache = (time.monotonic() + CACHE_SECONDS, merged)
    return merged


# Swagger UI's files come from a Python package (fastapi-offline ships Swagger UI 5), not a CDN: /docs
# works air-gapped, and the page loads nothing from another site.
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}


@cache
def _asset(name: str) -> bytes:
    return (files("fastapi_offline") / "static" / name).read_bytes()


@router.get("/docs/assets/{name}", include_in_schema=False)
async def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset named {name!r}")
    return Response(_asset(name), media_type=ASSETS[name], headers={"cache-control": "public, max-age=86400"})


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/docs/openapi.json",
        title="Coder Platform API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon.png",
    )
