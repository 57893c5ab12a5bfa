"""What a run target is: its description (data) and its wiring (code), kept apart.

A `Descriptor` is what the CLI's listings, the operator, the CRD and the charts read: names, ports,
dependencies, permissions, events. Each target's `descriptor.py` builds one from this module alone,
so reading every descriptor imports no web or database framework and no service code. A `Target`
is the wiring a process runs (router, tables, consumers, background tasks); it is imported only for
the targets a process serves. This module imports nothing heavy itself: the wiring's types are
annotations only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from sqlalchemy import MetaData

    from coder.shared.events.outbox import Consumer, EventTables
    from coder.shared.runtime import Runtime
    from coder.shared.settings import TargetSettings

ROOT = Path(__file__).resolve().parent.parent


class Dependency(StrEnum):
    POSTGRES = "postgres"
    REDIS = "redis"
    RABBITMQ = "rabbitmq"


class Access(StrEnum):
    """What kind of action a permission allows: the built-in roles are computed from it.

    viewer holds every READ action of every target, member READ and WRITE, admin READ, WRITE and
    ADMIN; OWNER actions only the owner role (`*`) holds. SELF actions concern the person, not the
    org: every session carries them whatever its role. SERVICE actions no role grants: a target
    calls them for a user with a workload identity, e.g. ai reserving budget in usage.
    """

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    OWNER = "owner"
    SELF = "self"
    SERVICE = "service"


@dataclass(frozen=True)
class Permission:
    """One `<target>:<action>`: what it allows, in a line, and its kind."""

    access: Access
    description: str


def read(description: str) -> Permission:
    return Permission(Access.READ, description)


def write(description: str) -> Permission:
    return Permission(Access.WRITE, description)


def admin(description: str) -> Permission:
    return Permission(Access.ADMIN, description)


def workload_secret(target: str) -> str:
    """The setting holding a target's workload secret (see `Descriptor.grants`)."""
    return f"{target.upper()}_WORKLOAD_SECRET"


def generated_workload_secrets(targets: Mapping[str, Descriptor], given: Mapping[str, str]) -> dict[str, str]:
    """A fresh workload secret for each target that was given none and needs one: it calls others
    for users (`grants`, `background_grants`) or acts for users after their request (a workload
    secret among its generated secrets: workflow). What `run` and `up` do where no operator does."""
    import secrets

    return {
        name: secrets.token_urlsafe(32)
        for name, target in targets.items()
        if name not in given
        and (target.grants or target.background_grants or workload_secret(name) in target.generated_secrets)
    }


@dataclass(frozen=True)
class Tool:
    """An MCP tool that is one of the target's own HTTP operations: the mcp target serves it.

    Data only: mcp derives the input schema from the operation's OpenAPI, calls the operation for
    the user (so the operation's own permission check is the tool's), and audits the call.
    """

    name: str  # unique on the platform: `<target>_<verb>`, e.g. "knowledge_search"
    operation: str  # "<METHOD> <path>" as the target's router declares it, e.g. "POST /v1/search"
    description: str  # what the model reads to choose the tool
    read_only: bool = False  # MCP annotations (readOnlyHint, destructiveHint, idempotentHint)
    destructive: bool = False
    idempotent: bool = False


@dataclass(frozen=True)
class KubeRule:
    """One RBAC rule: verbs on resources of an API group ("" is the core group), in the platform's
    sandbox namespace. A rule grants exactly what the target's code calls, nothing broader."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def manifest(self) -> dict[str, list[str]]:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


@dataclass(frozen=True)
class Descriptor:
    """A target's static description: pure data, the same in every process."""

    name: str
    port: int
    title: str
    package: str  # the module path of the target's package, e.g. "coder.services.secrets"
    needs: frozenset[Dependency] = frozenset({Dependency.POSTGRES})
    # Action -> its kind and one line saying what it allows; a token carries `<name>:<action>`.
    permissions: Mapping[str, Permission] = field(default_factory=dict)
    # CloudEvents types this target publishes, and those it consumes (routing keys).
    emits: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    # Settings (environment variables) whose values the operator generates once and keeps in a
    # Secret of the target's own, with a line saying what each is.
    generated_secrets: Mapping[str, str] = field(default_factory=dict)
    # Problem statuses any operation can answer, whatever it depends on (the gateway's edge: 429...);
    # documented on every operation of the target's OpenAPI.
    problems: frozenset[int] = frozenset()
    # SERVICE actions of other targets (`<target>:<action>`) this target may call for a user with its
    # workload identity (e.g. ai: `usage:reserve`); it then lists `workload_secret(name)` among its
    # generated secrets, the secret it proves itself with to the gateway.
    grants: tuple[str, ...] = ()
    # Those of `grants` the target may also use with no user request, for an organization (its event
    # handlers and background tasks, e.g. knowledge indexing a document in embeddings): the gateway
    # trades the target's secret alone for a token naming the org and `sub` "target:<name>".
    background_grants: tuple[str, ...] = ()
    # Operations offered to agents as MCP tools (served by the mcp target).
    tools: tuple[Tool, ...] = ()
    # Whether the target publishes RFC 9728 protected-resource metadata at
    # `/.well-known/oauth-protected-resource`: the gateway's 401s for it then name that document
    # (`WWW-Authenticate: Bearer resource_metadata=...`), which is how MCP clients find the issuer.
    resource_metadata: bool = False
    # Path prefixes (e.g. "/hooks/") the target authenticates with credentials of its own (an incoming
    # webhook's secret URL, a bot's token): the gateway forwards them without a gateway token, still
    # rate-limited and size-limited. Empty for almost every target.
    own_credentials: tuple[str, ...] = ()
    # The Kubernetes API access the target needs when it runs in a cluster (execution creates a Job
    # per run): the operator gives it a ServiceAccount bound to a Role of exactly these rules in the
    # platform's sandbox namespace (never the platform's own, whose Secrets a pod there could mount).
    # Empty for almost every target, whose pods get no API token at all.
    kube_rules: tuple[KubeRule, ...] = ()
    # Settings the target runs with in a cluster (what it cannot guess there, e.g. which backend and
    # namespace); `{namespace}` stands for the platform's namespace, `{sandbox_namespace}` for its
    # sandbox namespace. Env the spec sets wins.
    cluster_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def event_schemas(self) -> Mapping[str, Mapping[str, Any]]:
        """Event type -> JSON Schema of the `data` of each event this target emits, from its contract
        (built when asked: listings never load the contracts' models)."""
        from coder.shared.contracts import contract_of, event_schemas

        contracts = [contract_of(kind) for kind in self.emits]
        return event_schemas(*(c for c in contracts if c is not None))

    @property
    def migrations_dir(self) -> Path:
        relative = self.package.removeprefix("coder.").replace(".", "/")
        return ROOT / relative / "migrations"


@dataclass(frozen=True)
class Target:
    """A target's wiring: what a process that serves it imports and starts."""

    descriptor: Descriptor
    router: APIRouter
    metadata: MetaData | None = None
    events: EventTables | None = None
    # Routing-key pattern -> handler; the target gets one durable queue bound to all of them.
    consumes: Mapping[str, Consumer] = field(default_factory=dict)
    # Deliveries handled in one inbox transaction, at most (shared/events/relay.py `deliverer`). More
    # than 1 is for cheap handlers: one commit for many, but a slow handler delays its whole batch.
    consume_batch: int = 1
    settings: type[TargetSettings] | None = None
    # Long-running tasks started with the process (workers, schedulers), each given the runtime.
    background: Sequence[Callable[[Runtime], Awaitable[None]]] = ()
    # Extra wiring that needs the live runtime (the gateway mounts its proxy here).
    setup: Callable[[FastAPI, Runtime], None] | None = None
    # Refreshes the target's own gauges when /metrics is scraped (shared/metrics.py).
    metrics: Callable[[Runtime], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        # The descriptor is what the platform is told; the wiring may not consume anything else.
        if set(self.consumes) != set(self.descriptor.consumes):
            raise ValueError(
                f"{self.name}: handlers for {sorted(self.consumes)}, "
                f"descriptor consumes {sorted(self.descriptor.consumes)}"
            )

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def port(self) -> int:
        return self.descriptor.port

    @property
    def title(self) -> str:
        return self.descriptor.title

    @property
    def package(self) -> str:
        return self.descriptor.package

    @property
    def needs(self) -> frozenset[Dependency]:
        return self.descriptor.needs

    @property
    def problems(self) -> frozenset[int]:
        return self.descriptor.problems

    @property
    def migrations_dir(self) -> Path:
        return self.descriptor.migrations_dir


def service_urls(
    ports: Mapping[str, int],
    host: Callable[[str], str] | None = None,
    given: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The one table of where each target answers: `given[name]` when set, else
    `http://<host(name)>:<port>`, `host` defaulting to the target's own name (its Service's name in a
    cluster). The runtime, `coder-platform up` and the operator all build their URLs here. A URL
    given for a name this build does not know counts too: a target built apart, or a test pointing
    a name at a local fake of its protocol."""
    return {
        **{name: f"http://{host(name) if host else name}:{port}" for name, port in ports.items()},
        **(given or {}),
    }
