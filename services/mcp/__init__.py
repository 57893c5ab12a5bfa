"""mcp: the platform as Model Context Protocol tools, resources and prompts for agents.

A stateless streamable-HTTP server at `/mcp` built on the official `mcp` SDK. It owns no tool of its
own: every target declares which of its HTTP operations are tools (`Descriptor.tools`), mcp derives
each tool's input schema from that target's OpenAPI and calls the operation for the user with the
user's own token, so the target's permission check is the tool's. Every call lands in `mcp_audit`.
"""
