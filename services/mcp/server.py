"""The MCP server at `/mcp`: the official SDK's low-level server and its streamable-HTTP session
manager in stateless mode with JSON answers, behind the platform's own checks.

Before the SDK sees a request: Host and Origin (DNS-rebinding protection), then the bearer token
(verified like at every target, revocation list included) and `mcp:use`. A refusal is problem+json;
a 401 names the RFC 9728 protected-resource metadata in `WWW-Authenticate`. Each tool call goes to
the owning target with the caller's own token, so the target's permission check decides, and is
written to `mcp_audit` whatever its outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from coder.services.mcp.catalog import Catalog, SchemaUnavailable, ToolArgumentError
from coder.services.mcp.config import McpSettings
from coder.services.mcp.models import AuditEntry
from coder.shared import context
from coder.shared.app import VERSION
from coder.shared.auth import Principal, bearer_token
from coder.shared.db import transaction
from coder.shared.errors import Forbidden, Problem, Unauthorized, problem_response
from coder.shared.runtime import Runtime

if TYPE_CHECKING:
    import mcp_types as types
    from mcp.server.context import ServerRequestContext
    from mcp.server.lowlevel import Server

log = logging.getLogger(__name__)

USE = "mcp:use"
METADATA_PATH = "/.well-known/oauth-protected-resource"
MCP_PATH = "/mcp"
# Where the caller is kept in the request's scope for the handlers (the SDK hands them the request).
CALLER = "coder.mcp.caller"
TARGETS_URI = "coder://platform/targets"
ME_URI = "coder://me"


Context: TypeAlias = "ServerRequestContext[Any, Any]"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    token: str


def _matches(value: str, patterns: list[str]) -> bool:
    # `host:*` admits any port of host (the SDK's convention); anything else is compared whole.
    return any(value == p or (p.endswith(":*") and fnmatchcase(value, p[:-1] + "[0-9]*")) for p in patterns)


def check_transport(request: Request, settings: McpSettings) -> None:
    """DNS-rebinding protection (MCP spec, transports: servers MUST validate Origin)."""
    host = request.headers.get("host", "")
    if not _matches(host, settings.allowed_hosts):
        raise Problem(
            f"host {host!r} is not one this server answers for",
            status=421,
            slug="misdirected-request",
            title="Misdirected request",
        )
    origin = request.headers.get("origin")
    if origin is not None and not _matches(origin, settings.allowed_origins):
        raise Forbidden(f"origin {origin!r} is not allowed", slug="origin-forbidden")


def resource_url(request: Request, settings: McpSettings) -> str:
    """The public URL of `/mcp`: as configured, else as the request reached this app (the gateway's
    `/api/mcp` is the request's root path)."""
    if settings.public_url:
        return settings.public_url
    return str(request.base_url).rstrip("/") + MCP_PATH


def metadata(request: Request, settings: McpSettings, catalog: Catalog) -> dict[str, Any]:
    """RFC 9728 protected-resource metadata: what this resource is and who issues its tokens."""
    resource = resource_url(request, settings)
    parts = urlsplit(resource)
    return {
        "resource": resource,
        # The gateway, at the origin the resource is published at, issues every token the platform
        # accepts (its discovery document is /.well-known/openid-configuration there).
        "authorization_servers": [f"{parts.scheme}://{parts.netloc}"],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [USE],
        "resource_name": "Coder Platform",
        "resource_documentation": f"{parts.scheme}://{parts.netloc}/docs",
    }


def challenge(request: Request, settings: McpSettings, *, invalid: bool) -> str:
    resource = resource_url(request, settings)
    # The metadata sits beside `/mcp` (both under the gateway's `/api/mcp`).
    where = resource.removesuffix(MCP_PATH) + METADATA_PATH
    error = ', error="invalid_token"' if invalid else ""
    return f'Bearer resource_metadata="{where}"{error}'


async def authenticate(request: Request, runtime: Runtime, settings: McpSettings) -> Caller:
    """The caller's verified token holding `mcp:use`. The same verification as `require(...)` at every
    target; done here rather than as a route dependency because the 401 must name the metadata."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(
            "a bearer token is required",
            headers={"WWW-Authenticate": challenge(request, settings, invalid=False)},
        )
    assert runtime.verifier is not None
    try:
        principal = await runtime.verifier.verify(token)
        if runtime.revocations is not None:
            await runtime.revocations.check(principal)
    except Unauthorized as refused:
        refused.headers = {"WWW-Authenticate": challenge(request, settings, invalid=True)}
        raise
    if not principal.can(USE):
        raise Forbidden(f"requires permission {USE}", required=USE)
    return Caller(principal, token)


def _caller(ctx: Context) -> Caller:
    caller = ctx.request.scope.get(CALLER) if ctx.request is not None else None
    if not isinstance(caller, Caller):
        raise RuntimeError("an MCP request reached a handler without passing the endpoint's checks")
    return caller


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def _refusal(name: str, response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """A target's problem as the tool error's text, naming the permission of a 403."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    details = {k: problem[k] for k in ("type", "required") if k in problem}
    if response.status_code == 403:
        required = problem.get("required")
        needed = f"requires permission {required}" if required else problem.get("detail", "forbidden")
        return f"{name} refused (403): {needed}", details
    detail = problem.get("detail") or problem.get("title") or response.reason_phrase
    errors = problem.get("errors")
    if errors:
        detail = f"{detail} {_json_text(errors)}"
    return f"{name} failed ({response.status_code}): {detail}", details


class McpApp:
    """The platform's MCP server for one process."""

    def __init__(self, runtime: Runtime, settings: McpSettings, catalog: Catalog) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog

    @cached_property
    def server(self) -> Server[Any]:
        """The SDK's server, built by the first request: importing the SDK weighs on every start."""
        from mcp.server.lowlevel import Server

        return Server(
            "coder-platform",
            version=VERSION,
            title="Coder Platform",
            instructions=(
                "Tools are operations of the Coder Platform's services, run with your own permissions "
                "in your organization. Read coder://platform/targets for what each service offers."
            ),
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
        )

    # --- the endpoint ---

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            check_transport(request, self.settings)
            scope[CALLER] = await authenticate(request, self.runtime, self.settings)
        except Problem as problem:
            await problem_response(problem, request)(scope, receive, send)
            return
        # Stateless (any replica answers any request, nothing outlives its request): a manager of its
        # own per request, whose task group ends with the request.
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        manager = StreamableHTTPSessionManager(self.server, json_response=True, stateless=True)
        async with manager.run():
            await manager.handle_request(scope, receive, send)

    # --- tools ---

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        import mcp_types as types

        _caller(ctx)
        tools = []
        for name, offered in self.catalog.tools.items():
            try:
                schema = await self.catalog.schema(name)
            except SchemaUnavailable as exc:
                # One unreachable target must not hide every other target's tools.
                log.warning("tool left out", extra={"tool": name, "error": str(exc)})
                continue
            tool = offered.tool
            tools.append(
                types.Tool(
                    name=name,
                    description=tool.description,
                    input_schema=schema,
                    annotations=types.ToolAnnotations(
                        read_only_hint=tool.read_only,
                        destructive_hint=tool.destructive,
                        idempotent_hint=tool.idempotent,
                        # Every tool acts inside the platform, on the caller's organization.
                        open_world_hint=False,
                    ),
                    meta={"coder/target": offered.target, "coder/operation": tool.operation},
                )
            )
        return types.ListToolsResult(tools=tools)

    async def call_tool(self, ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        caller = _caller(ctx)
        name, arguments = params.name, dict(params.arguments or {})
        offered = self.catalog.tools.get(name)
        if offered is None:
            return _error(f"unknown tool {name!r}")
        audit = AuditEntry(
            org_id=caller.principal.org_id,
            actor=caller.principal.subject,
            tool=name,
            target=offered.target,
            operation=offered.tool.operation,
            status=None,
            outcome="error",
            details={"arguments": sorted(arguments)},
            request_id=context.request_id.get(),
        )
        try:
            response = await self.catalog.call(name, arguments, caller.token)
        except ToolArgumentError as exc:
            result = _error(f"invalid argument {exc}")
            audit.details = {**audit.details, "argument": exc.argument}
        except (SchemaUnavailable, httpx.HTTPError) as exc:
            result = _error(f"{offered.target} is unavailable: {exc}")
        else:
            audit.status = response.status_code
            if response.is_success:
                audit.outcome = "ok"
                result = _success(response)
            else:
                audit.outcome = "denied" if response.status_code in (401, 403) else "error"
                text, details = _refusal(name, response)
                audit.details = {**audit.details, **details}
                result = _error(text)
        async with transaction(self.runtime.sessions) as session:
            session.add(audit)
        return result

    # --- resources ---

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        import mcp_types as types

        _caller(ctx)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=TARGETS_URI,
                    name="targets",
                    title="The platform's services",
                    description="Each service of the platform: what it is, its permissions and its MCP tools",
                    mime_type="application/json",
                ),
                types.Resource(
                    uri=ME_URI,
                    name="me",
                    title="Who you are here",
                    description="Your user id, your organization and the permissions your token carries",
                    mime_type="application/json",
                ),
            ]
        )

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        import mcp_types as types

        caller = _caller(ctx)
        uri = str(params.uri)
        if uri == TARGETS_URI:
            value: Any = self._targets()
        elif uri == ME_URI:
            principal = caller.principal
            value = {
                "subject": principal.subject,
                "organization": principal.org_id,
                "permissions": sorted(principal.permissions),
            }
        else:
            raise ValueError(f"unknown resource {uri!r}")
        return types.ReadResourceResult(
            contents=[
                types.TextResourceContents(uri=uri, mime_type="application/json", text=_json_text(value))
            ]
        )

    def _targets(self) -> list[dict[str, Any]]:
        tools: dict[str, list[str]] = {}
        for name, offered in self.catalog.tools.items():
            tools.setdefault(offered.target, []).append(name)
        return [
            {
                "name": name,
                "title": d.title,
                "permissions": {f"{name}:{a}": p.description for a, p in d.permissions.items()},
                "tools": tools.get(name, []),
            }
            for name, d in self.runtime.descriptors.items()
        ]

    # --- prompts ---

    async def list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        import mcp_types as types

        _caller(ctx)
        return types.ListPromptsResult(
            prompts=[
                types.Prompt(
                    name=name,
                    title=p.title,
                    description=p.description,
                    arguments=[
                        types.PromptArgument(name=a.name, description=a.description, required=a.required)
                        for a in p.arguments
                    ],
                )
                for name, p in PROMPTS.items()
            ]
        )

    async def get_prompt(self, ctx: Context, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        import mcp_types as types

        _caller(ctx)
        prompt = PROMPTS.get(params.name)
        if prompt is None:
            raise ValueError(f"unknown prompt {params.name!r}")
        arguments = params.arguments or {}
        for argument in prompt.arguments:
            if argument.required and not arguments.get(argument.name):
                raise ValueError(f"argument {argument.name!r} is required")
        text = prompt.template.format_map(_Blank(arguments))
        return types.GetPromptResult(
            description=prompt.description,
            messages=[types.PromptMessage(role="user", content=types.TextContent(text=text))],
        )


class _Blank(dict[str, str]):
    """Prompt arguments, an absent optional one reading as empty."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class Argument:
    """An argument of a prompt: `PromptArgument` on the wire, built when asked (the MCP types are
    loaded with the SDK, by the first request)."""

    name: str
    description: str
    required: bool | None = None


@dataclass(frozen=True)
class PromptTemplate:
    title: str
    description: str
    template: str
    arguments: tuple[Argument, ...] = ()


PROMPTS: Mapping[str, PromptTemplate] = {
    "usage_review": PromptTemplate(
        title="Review usage against budgets",
        description="Compare the organization's metered usage with its budgets and point out risks",
        template=(
            "List my organization's meters with usage_meters_list and its budgets with usage_budgets_list. "
            "For each budget, say what it limits, over which window, and whether its limit looks at risk. "
            "Focus on: {focus}"
        ),
        arguments=(Argument(name="focus", description="What to look at first, e.g. a team or a model"),),
    ),
    "secrets_inventory": PromptTemplate(
        title="Inventory the organization's secrets",
        description="Summarise which secrets exist where, from their metadata only (never their values)",
        template=(
            "With secrets_list, list the secrets whose path starts with '{prefix}' (every secret if that is "
            "empty) and group them by project and environment. "
            "Name secrets with many versions or none current. Do not try to read any secret's value."
        ),
        arguments=(Argument(name="prefix", description="A path prefix, e.g. providers/"),),
    ),
}


def _success(response: httpx.Response) -> types.CallToolResult:
    import mcp_types as types

    if response.status_code == 204 or not response.content:
        return types.CallToolResult(content=[types.TextContent(text="done")])
    try:
        value = response.json()
    except ValueError:
        return types.CallToolResult(content=[types.TextContent(text=response.text)])
    # structuredContent is an object; a bare list or value is wrapped.
    structured = value if isinstance(value, dict) else {"result": value}
    return types.CallToolResult(
        content=[types.TextContent(text=_json_text(value))], structured_content=structured
    )


def _error(text: str) -> types.CallToolResult:
    import mcp_types as types

    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)
