"""What a run target is: a named, ported unit the CLI, the gateway and the operator all read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData

from coder.shared.events.outbox import EventTables, Handler
from coder.shared.settings import TargetSettings

if TYPE_CHECKING:
    from coder.shared.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent


class Dependency(StrEnum):
    POSTGRES = "postgres"
    REDIS = "redis"
    RABBITMQ = "rabbitmq"


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    title: str
    package: str  # the module path of the target's package, e.g. "coder.services.secrets"
    router: APIRouter
    needs: frozenset[Dependency] = frozenset({Dependency.POSTGRES})
    metadata: MetaData | None = None
    events: EventTables | None = None
    # Routing-key pattern -> handler; the target gets one durable queue bound to all of them.
    consumes: Mapping[str, Handler] = field(default_factory=dict)
    settings: type[TargetSettings] | None = None
    # Long-running tasks started with the process (workers, schedulers), each given the runtime.
    background: Sequence[Callable[[Runtime], Awaitable[None]]] = ()
    # Extra wiring that needs the live runtime (the gateway mounts its proxy here).
    setup: Callable[[FastAPI, Runtime], None] | None = None
    # Problem statuses any operation can answer, whatever it depends on (the gateway's edge: 429...);
    # documented on every operation of the target's OpenAPI.
    problems: frozenset[int] = frozenset()

    @property
    def migrations_dir(self) -> Path:
        relative = self.package.removeprefix("coder.").replace(".", "/")
        return ROOT / relative / "migrations"
