"""The platform's tools: gathered from every target's descriptor, described by the owning target's
OpenAPI, and called on that target for the user.

A tool's input is one JSON object: the operation's path and query parameters by name, and its JSON
request body, if it takes one, under `body`. The schemas come from the target's own `/openapi.json`
(fetched through the process's service clients: in-process in `all` mode, over HTTP otherwise) and
are kept for `schema_cache_seconds`, so a target's schema change reaches agents without a restart.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from coder.shared.http import ServiceClients
from coder.shared.target import Descriptor, Tool

BODY = "body"
_COMPONENT = "#/components/schemas/"
# `{name}`, or `{name:path}` as a Starlette router declares a multi-segment one.
_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")


@dataclass(frozen=True)
class Offered:
    """A tool and where it lives."""

    target: str
    tool: Tool

    @property
    def method(self) -> str:
        return self.tool.operation.split(" ", 1)[0].upper()

    @property
    def path(self) -> str:
        """As the OpenAPI document writes it (no converters)."""
        return _PARAMETER.sub(r"{\1}", self.tool.operation.split(" ", 1)[1])


def offered(descriptors: Mapping[str, Descriptor]) -> dict[str, Offered]:
    """Every tool of every target the platform knows, by name (names are unique on the platform)."""
    tools: dict[str, Offered] = {}
    for name, descriptor in descriptors.items():
        for tool in descriptor.tools:
            if not tool.name.startswith(f"{name}_"):
                raise ValueError(f"{name}'s tool {tool.name!r} must be named {name}_<verb>")
            if tool.name in tools:
                raise ValueError(f"tool {tool.name!r} is declared by {tools[tool.name].target} and {name}")
            tools[tool.name] = Offered(name, tool)
    return tools


class SchemaUnavailable(Exception):
    """The owning target's OpenAPI could not be read, or does not declare the tool's operation."""


def _collect_refs(node: Any, components: Mapping[str, Any], into: dict[str, Any]) -> None:
    """Copies into `into` every component schema `node` references, transitively."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_COMPONENT):
            name = ref.removeprefix(_COMPONENT)
            if name not in into and name in components:
                into[name] = components[name]
                _collect_refs(components[name], components, into)
        for value in node.values():
            _collect_refs(value, components, into)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, components, into)


def input_schema(document: Mapping[str, Any], method: str, path: str) -> dict[str, Any]:
    """The JSON Schema of a tool's arguments, from its operation in the target's OpenAPI document."""
    operation = document.get("paths", {}).get(path, {}).get(method.lower())
    if not isinstance(operation, dict):
        raise SchemaUnavailable(f"the target's OpenAPI has no {method} {path}")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in operation.get("parameters", []):
        if parameter.get("in") not in ("path", "query"):
            continue
        declared = dict(parameter.get("schema", {}))
        if parameter.get("description") and "description" not in declared:
            declared["description"] = parameter["description"]
        properties[parameter["name"]] = declared
        if parameter.get("required"):
            required.append(parameter["name"])
    body = operation.get("requestBody", {})
    content = body.get("content", {}).get("application/json")
    if content is not None:
        properties[BODY] = {**content.get("schema", {}), "description": "The request body"}
        if body.get("required"):
            required.append(BODY)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    components = document.get("components", {}).get("schemas", {})
    defs: dict[str, Any] = {}
    _collect_refs(schema, components, defs)
    if defs:
        schema["$defs"] = defs
    # The tool's schema stands alone: references point into its own `$defs`.
    text = json.dumps(schema).replace(f'"{_COMPONENT}', '"#/$defs/')
    result: dict[str, Any] = json.loads(text)
    return result


class Catalog:
    """The tools and their schemas, as one process serves them."""

    def __init__(self, descriptors: Mapping[str, Descriptor], clients: ServiceClients, ttl: float) -> None:
        self.tools = offered(descriptors)
        self._clients = clients
        self._ttl = ttl
        self._documents: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _document(self, target: str) -> dict[str, Any]:
        cached = self._documents.get(target)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        async with self._locks.setdefault(target, asyncio.Lock()):
            cached = self._documents.get(target)
            if cached is not None and time.monotonic() - cached[0] < self._ttl:
                return cached[1]
            try:
                # Public at every target: no credential goes along (the client adds the caller's).
                response = await self._clients.client(target).get("/openapi.json")
                response.raise_for_status()
                document: dict[str, Any] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SchemaUnavailable(f"{target}'s OpenAPI is unavailable: {type(exc).__name__}") from exc
            self._documents[target] = (time.monotonic(), document)
            return document

    async def schema(self, name: str) -> dict[str, Any]:
        tool = self.tools[name]
        return input_schema(await self._document(tool.target), tool.method, tool.path)

    async def call(self, name: str, arguments: Mapping[str, Any], token: str) -> httpx.Response:
        """Calls the tool's operation on its target with the caller's own token."""
        tool = self.tools[name]
        schema = await self.schema(name)
        known = schema["properties"]
        unknown = sorted(set(arguments) - set(known))
        if unknown:
            raise ToolArgumentError(unknown[0], "not an argument of this tool")
        missing = [n for n in schema.get("required", []) if n not in arguments]
        if missing:
            raise ToolArgumentError(missing[0], "required")
        path_names = set(_PARAMETER.findall(tool.path))
        for n in path_names:
            value = arguments[n]
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise ToolArgumentError(n, "must be a non-empty string or an integer")
            # A dot segment would take the call to another operation than the tool's.
            if isinstance(value, str) and {".", ".."} & set(value.split("/")):
                raise ToolArgumentError(n, "must not contain `.` or `..` segments")
        # Path parameters fill their segment (`/` kept: secrets' paths are multi-segment); the rest of
        # the arguments but the body are the query string, as the operation declares them.
        url = _PARAMETER.sub(lambda m: quote(str(arguments[m.group(1)]), safe="/"), tool.path)
        query = {k: _query_value(k, v) for k, v in arguments.items() if k != BODY and k not in path_names}
        return await self._clients.client(tool.target).request(
            tool.method,
            url,
            params=query,
            json=arguments.get(BODY),
            headers={"authorization": f"Bearer {token}"},
        )


def _query_value(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return value
    raise ToolArgumentError(name, "must be a string, a number, a boolean or a list of them")


class ToolArgumentError(Exception):
    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
