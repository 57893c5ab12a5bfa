from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings

# Loopback and the in-cluster Service name; a public host is added with MCP_ALLOWED_HOSTS.
DEFAULT_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "mcp:*", "mcp"]
DEFAULT_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


class McpSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="MCP_")

    # DNS-rebinding protection (MCP spec, transports): the Host header must be one of these (`host:*`
    # admits any port), and a browser's Origin, when sent, one of `allowed_origins`. Clients that send
    # no Origin (desktop and CLI agents) are admitted.
    allowed_hosts: list[str] = Field(default_factory=lambda: list(DEFAULT_HOSTS))
    # Browser origins admitted (`origin:*` admits any port).
    allowed_origins: list[str] = Field(default_factory=lambda: list(DEFAULT_ORIGINS))
    # The public URL of `/mcp` (e.g. https://coder.example.com/api/mcp/mcp), named in the
    # protected-resource metadata; by default derived from the request that asks.
    public_url: str | None = None
    # How long a target's OpenAPI document (where tool input schemas come from) is kept.
    schema_cache_seconds: float = Field(default=300.0, ge=0)
