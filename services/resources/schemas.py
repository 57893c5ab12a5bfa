from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from coder.services.resources.quantities import Resource, parse
from coder.shared.schemas import Input


class Scope(StrEnum):
    ORG = "org"
    TEAM = "team"
    USER = "user"


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"  # its TTL passed before a release: it no longer counts


def _parsed(resource: Resource) -> BeforeValidator:
    return BeforeValidator(lambda value: value if value is None else parse(resource, value))


_QUANTITY = {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "number", "minimum": 0}]}
Sandboxes = Annotated[
    int,
    _parsed(Resource.SANDBOXES),
    WithJsonSchema({"type": "integer", "minimum": 0, "description": "A count of sandboxes"}),
]
Cpu = Annotated[
    int,
    _parsed(Resource.CPU),
    WithJsonSchema({**_QUANTITY, "description": 'CPU as Kubernetes writes it: "500m", "2", 1.5 (cores)'}),
]
Bytes = Annotated[
    int,
    _parsed(Resource.MEMORY),
    WithJsonSchema({**_QUANTITY, "description": 'Bytes as Kubernetes writes them: "2Gi", "512M", 1024'}),
]
StorageBytes = Annotated[
    int,
    _parsed(Resource.STORAGE),
    WithJsonSchema({**_QUANTITY, "description": 'Bytes as Kubernetes writes them: "10Gi", "1T"'}),
]
Credits = Annotated[
    Decimal,
    _parsed(Resource.AI_CREDITS),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "maxLength": 64}, {"type": "number", "minimum": 0}],
            "description": "AI credits (money): at most 6 decimals",
        }
    ),
]
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
ScopeId = Annotated[str, Field(min_length=1, max_length=128)]


class Amounts(Input):
    """An amount of each resource; a resource left out is none (in a reservation) or not limited (in
    a quota's limits)."""

    sandboxes: Sandboxes | None = None
    cpu: Cpu | None = None
    memory: Bytes | None = None
    storage: StorageBytes | None = None
    ai_credits: Credits | None = None

    def given(self) -> dict[Resource, int | Decimal]:
        return {Resource(name): value for name, value in self.model_dump().items() if value is not None}


class AmountsRead(BaseModel):
    """Amounts in their stored units; null where a quota sets no limit."""

    sandboxes: int | None = Field(default=None, description="Count")
    cpu: int | None = Field(default=None, description="Millicores (1000 = one core)")
    memory: int | None = Field(default=None, description="Bytes")
    storage: int | None = Field(default=None, description="Bytes")
    ai_credits: Money | None = Field(default=None, description="Money")

    @classmethod
    def of(cls, amounts: dict[Resource, Any]) -> AmountsRead:
        return cls(**{resource.value: value for resource, value in amounts.items()})


# --- quotas ---


class QuotaCreate(Input):
    name: str = Field(default="", max_length=200)
    scope: Scope
    scope_id: ScopeId | None = Field(
        default=None, description="The team's or user's id; leave it out for the organization's quota"
    )
    hard: Amounts = Field(description="The limits; at least one resource")


class QuotaUpdate(Input):
    name: str | None = Field(default=None, max_length=200)
    hard: Amounts | None = Field(
        default=None,
        description="Limits to change: a resource given is set, null removes its limit, left out stays",
    )


class QuotaRead(BaseModel):
    id: uuid.UUID
    name: str
    scope: Scope
    scope_id: str
    hard: AmountsRead
    used: AmountsRead = Field(description="Held by active reservations at this scope now")
    created_at: datetime
    updated_at: datetime


class MyQuotas(BaseModel):
    """The quotas covering the caller, each with its use, and what remains of each resource (the
    smallest room left across them; null where none limits it)."""

    user_id: str
    team_id: str | None
    quotas: list[QuotaRead]
    remaining: AmountsRead


# --- reservations ---


class ReservationCreate(Input):
    user_id: ScopeId | None = Field(default=None, description="Default: the user the caller acts for")
    team_id: ScopeId | None = Field(default=None, description="The team whose quota also applies")
    resources: Amounts
    ttl_seconds: int = Field(
        default=600, ge=1, le=7 * 86400, description="Released by itself after this long if not before"
    )
    reference: str | None = Field(default=None, max_length=255, description="What it is for, e.g. a job id")


class ReservationRead(BaseModel):
    id: uuid.UUID
    status: ReservationStatus
    user_id: str
    team_id: str | None
    resources: AmountsRead
    reference: str | None
    requested_by: str | None = Field(description="The target that reserved, for a workload caller")
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None


# --- ledger ---


class ComputeUsage(BaseModel):
    """Reserved resources over time in [from, to): each reservation counts from its creation until it
    was released, expired or `to`, whichever came first."""

    in_use: AmountsRead = Field(description="Held by active reservations now")
    active_reservations: int
    reservations: int = Field(description="Reservations overlapping the window")
    sandbox_seconds: float
    cpu_core_seconds: float
    memory_gib_seconds: float
    storage_gib_seconds: float
    ai_credits_reserved: Money = Field(description="AI credits reserved by reservations made in the window")


class AiBudget(BaseModel):
    id: str
    name: str
    period: str
    period_start: datetime
    limit: float
    spent: float
    reserved: float
    remaining: float


class AiSpend(BaseModel):
    """AI spend in US dollars as usage counts it, read from usage for the caller."""

    available: bool = Field(description="False when usage could not be read; `detail` says why")
    detail: str | None = None
    budgets: list[AiBudget] = Field(default_factory=list, description="usage's cost budgets at this scope")
    meter: str | None = None
    metered: float | None = Field(default=None, description="The meter's total over the window")


class Ledger(BaseModel):
    scope: Scope
    scope_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    quota: QuotaRead | None = Field(description="The scope's own quota, if it has one")
    compute: ComputeUsage
    ai: AiSpend

    model_config = {"populate_by_name": True}
