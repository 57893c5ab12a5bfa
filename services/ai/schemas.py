"""Request bodies (`Input`) and answers of ai's management API; the inference bodies are in wire.py."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AnyHttpUrl, BaseModel, Field, PlainSerializer

from coder.shared.schemas import Input

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Price = Annotated[
    Decimal,
    Field(ge=0, le=Decimal(1_000_000), decimal_places=6, description="USD per million tokens"),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Url = Annotated[AnyHttpUrl, Field(description="The API root the provider's own SDK takes as base_url")]
SecretPath = Annotated[
    str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
]


class ProviderKind(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai_compatible"  # Ollama, vLLM, LM Studio...


class Capability(StrEnum):
    CHAT = "chat"
    FIM = "fim"  # fill-in-the-middle: /v1/completions with a suffix
    TOOLS = "tools"
    VISION = "vision"
    EMBED = "embed"


class Routing(StrEnum):
    ORDERED = "ordered"
    CHEAPEST = "cheapest"


class Role(StrEnum):
    """What the IDE uses a model group for (its start-up call, /v1/config)."""

    CHAT = "chat"
    AUTOCOMPLETE = "autocomplete"
    EMBED = "embed"
    EDIT = "edit"


# --- providers ---


class ProviderCreate(Input):
    name: Name
    kind: ProviderKind
    base_url: Url = Field(
        description="e.g. https://api.openai.com/v1, https://api.anthropic.com, http://localhost:11434/v1"
    )
    key_path: SecretPath | None = Field(
        default=None,
        description="Path of the secret (in `secrets`, this organization's) holding the API key; "
        "none for a server that needs no key (a local Ollama)",
    )
    key_field: Name = Field(default="api_key", description="The secret's field holding the key")
    external: bool = Field(
        default=True, description="Runs outside the organization: private context is never sent to it"
    )


class ProviderUpdate(Input):
    base_url: Url | None = None
    key_path: SecretPath | None = None
    key_field: Name | None = None
    external: bool | None = None


class ProviderRead(BaseModel):
    id: uuid.UUID
    name: str
    kind: ProviderKind
    base_url: str
    key_path: str | None = Field(description="Where the key is kept; the key itself is never returned")
    key_field: str
    external: bool
    created_at: datetime
    updated_at: datetime


# --- deployments ---


class DeploymentCreate(Input):
    name: Name
    provider_id: uuid.UUID
    model: str = Field(min_length=1, max_length=200, description="The model's name at the provider")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request defaults sent to the provider (temperature...)"
    )
    capabilities: list[Capability] = Field(default_factory=lambda: [Capability.CHAT], max_length=5)
    context_window: int = Field(default=128_000, ge=1, le=100_000_000)
    max_output_tokens: int = Field(
        default=4096, ge=1, le=10_000_000, description="Used when a request names no max_tokens"
    )
    input_price: Price = Decimal(0)
    output_price: Price = Decimal(0)
    cached_price: Price = Decimal(0)


class DeploymentUpdate(Input):
    model: str | None = Field(default=None, min_length=1, max_length=200)
    params: dict[str, Any] | None = None
    capabilities: list[Capability] | None = Field(default=None, max_length=5)
    context_window: int | None = Field(default=None, ge=1, le=100_000_000)
    max_output_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    input_price: Price | None = None
    output_price: Price | None = None
    cached_price: Price | None = None


class DeploymentRead(BaseModel):
    id: uuid.UUID
    name: str
    provider_id: uuid.UUID
    model: str
    params: dict[str, Any]
    capabilities: list[Capability]
    context_window: int
    max_output_tokens: int
    input_price: Price
    output_price: Price
    cached_price: Price
    created_at: datetime
    updated_at: datetime


class HealthState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    COOLDOWN = "cooldown"
    UNKNOWN = "unknown"


class HealthRead(BaseModel):
    deployment_id: uuid.UUID
    name: str
    state: HealthState
    checked_at: datetime | None = Field(description="The last background check or routed call")
    detail: str | None = None
    cooldown_seconds: float | None = Field(description="Left of the cooldown, when cooling down")


# --- model groups ---


class GroupCreate(Input):
    alias: Name = Field(description="What clients name as `model`, e.g. `chat` or `autocomplete`")
    deployments: list[uuid.UUID] = Field(min_length=1, max_length=50, description="In routing order")
    fallbacks: list[Name] = Field(
        default_factory=list, max_length=10, description="Aliases of groups to try, in order"
    )
    routing: Routing = Routing.ORDERED
    cheaper_on_budget: bool = Field(
        default=False,
        description="When a budget refuses the call, route to the group's cheapest deployment instead",
    )
    roles: list[Role] = Field(default_factory=list, max_length=4)


class GroupUpdate(Input):
    deployments: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=50)
    fallbacks: list[Name] | None = Field(default=None, max_length=10)
    routing: Routing | None = None
    cheaper_on_budget: bool | None = None
    roles: list[Role] | None = Field(default=None, max_length=4)


class GroupRead(BaseModel):
    id: uuid.UUID
    alias: str
    deployments: list[uuid.UUID]
    fallbacks: list[str]
    routing: Routing
    cheaper_on_budget: bool
    roles: list[Role]
    created_at: datetime
    updated_at: datetime
