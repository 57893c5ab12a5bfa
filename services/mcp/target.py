from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Route

from coder.services.mcp.api import router
from coder.services.mcp.catalog import Catalog
from coder.services.mcp.config import McpSettings
from coder.services.mcp.descriptor import descriptor
from coder.services.mcp.models import Base
from coder.services.mcp.server import MCP_PATH, METADATA_PATH, McpApp, metadata
from coder.shared.runtime import Runtime
from coder.shared.target import Target


def setup(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.config(McpSettings)
    # Every target the platform knows, served in this process or not: the runtime holds the
    # registry's descriptors, so mcp reads them without importing the registry itself.
    catalog = Catalog(runtime.descriptors, runtime.clients, settings.schema_cache_seconds)
    server = McpApp(runtime, settings, catalog)
    # A plain ASGI route: the SDK speaks to the client itself, after the app's own checks. POST only:
    # stateless, there is no session to DELETE and no server-initiated message a GET stream would carry
    # (the spec's 405 for GET).
    app.router.routes.append(Route(MCP_PATH, endpoint=server, methods=["POST"]))

    async def protected_resource(request: Request) -> dict[str, Any]:
        """RFC 9728 protected-resource metadata of `/mcp`."""
        return metadata(request, settings, catalog)

    for path in (METADATA_PATH, METADATA_PATH + MCP_PATH):
        app.add_api_route(path, protected_resource, methods=["GET"], include_in_schema=False)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=McpSettings,
    setup=setup,
)
