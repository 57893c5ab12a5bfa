"""The MCP tools embeddings offers are operations it really serves."""

from __future__ import annotations

from fastapi.routing import APIRoute

from coder.services.embeddings.descriptor import descriptor
from coder.services.embeddings.target import target


def test_every_tool_names_a_served_operation() -> None:
    served = {
        f"{method} {route.path}"
        for route in target.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert descriptor.tools
    for tool in descriptor.tools:
        assert tool.name.startswith("embeddings_")
        assert tool.operation in served, tool.operation
        assert tool.read_only and not tool.destructive
