"""mcp as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, admin, read

descriptor = Descriptor(
    name="mcp",
    port=3009,
    title="MCP server",
    package="coder.services.mcp",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS}),
    permissions={
        "use": read("Connect an MCP client: list tools, resources and prompts, and call tools"),
        "audit": admin("Read the audit trail of MCP tool calls"),
    },
    resource_metadata=True,
)
