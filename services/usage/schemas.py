from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, NotRequired

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter
from typing_extensions import TypedDict

from coder.shared.schemas import Input, Storable

# Amounts are exact decimals inside and plain JSON numbers outside.
Amount = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("1e12"), decimal_places=6, description="Non-negative; at most 6 decimals"),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
Slug = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Lowercase letters, digits, '_' and '-'; unique in the organization",
    ),
]
EventType = Annotated[str, Field(min_length=1, max_length=200)]
ScopeId = Annotated[str, Field(min_length=1, max_length=128)]


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"


class Dimension(StrEnum):
    """Event data keys a meter can group and filter by (copied to columns at ingest)."""

    MODEL = "model"
    USER_ID = "user_id"
    TEAM_ID = "team_id"
    API_KEY_ID = "api_key_id"
    FEATURE = "feature"


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"


class Scope(StrEnum):
    ORG = "org"
    TEAM = "team"
    USER = "user"
    API_KEY = "api_key"


class Metric(StrEnum):
    COST_USD = "cost_usd"
    TOKENS = "tokens"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"
    TOTAL = "total"


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"  # reserved, but its expiry has passed: its holds are gone


# --- ingestion ---


# Events are TypedDicts rather than models: a batch of a thousand builds no model per event, and its
# text and number rules are checked in one walk of the whole batch (`EventBatch`).


class EventData(TypedDict, total=False):
    """The event's payload: any JSON object. These keys, when present, are what meters group by."""

    __pydantic_config__ = ConfigDict(extra="allow", allow_inf_nan=False)  # type: ignore[misc]

    user_id: Annotated[str | None, Field(max_length=128)]
    team_id: Annotated[str | None, Field(max_length=128)]
    api_key_id: Annotated[str | None, Field(max_length=128)]
    model: Annotated[str | None, Field(max_length=200)]
    feature: Annotated[str | None, Field(max_length=128)]


class EventIn(TypedDict):
    """A CloudEvents 1.0 event (JSON format). Extension attributes are accepted and ignored; the
    organization is always the caller's."""

    __pydantic_config__ = ConfigDict(extra="allow", allow_inf_nan=False)  # type: ignore[misc]

    specversion: NotRequired[Literal["1.0"]]
    id: Annotated[str, Field(min_length=1, max_length=255)]
    source: Annotated[str, Field(min_length=1, max_length=255)]
    type: EventType
    time: NotRequired[Annotated[AwareDatetime | None, Field(description="Default: when it is ingested")]]
    subject: NotRequired[Annotated[str | None, Field(max_length=255)]]
    data: NotRequired[EventData]


EventBatch = Annotated[list[EventIn], Storable]
EVENTS: TypeAdapter[list[EventIn]] = TypeAdapter(EventBatch)


class IngestRead(BaseModel):
    accepted: int = Field(description="Events stored by this call")
    duplicates: int = Field(description="Events already stored (or repeated in this batch): ignored")


# --- meters ---


class MeterCreate(Input):
    slug: Slug
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    event_type: EventType = Field(description="The CloudEvents `type` this meter aggregates")
    aggregation: Aggregation
    value_property: str | None = Field(
        default=None,
        max_length=255,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Key in the event data (dots for nested keys), e.g. `cost_usd`; not used by `count`",
    )
    group_by: list[Dimension] = Field(
        default_factory=list, max_length=len(Dimension), description="Dimensions queries may group by"
    )


class MeterRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    slug: str
    name: str
    description: str
    event_type: str
    aggregation: Aggregation
    value_property: str | None
    group_by: list[Dimension]
    created_at: datetime


class MeterRow(BaseModel):
    window_start: datetime | None = Field(description="Null when the query had no `from` and no window")
    window_end: datetime
    value: float
    group: dict[str, str | None]


class MeterQueryRead(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    meter: str
    aggregation: Aggregation
    from_: datetime | None = Field(alias="from")
    to: datetime
    window_size: WindowSize | None
    window_time_zone: str
    data: list[MeterRow]


# --- budgets ---


class BudgetCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    scope: Scope
    scope_id: ScopeId | None = Field(default=None, description="The team, user or API key; null for `org`")
    metric: Metric
    limit: Amount
    period: Period


class BudgetUpdate(Input):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    limit: Amount | None = None


class BudgetRead(BaseModel):
    id: uuid.UUID
    name: str
    scope: Scope
    scope_id: str | None
    metric: Metric
    limit: Money
    period: Period
    period_start: datetime
    period_end: datetime | None
    spent: Money = Field(description="Settled spend in the current period")
    reserved: Money = Field(description="Held by active reservations")
    remaining: Money = Field(description="limit - spent - reserved, never below 0")
    created_at: datetime
    updated_at: datetime


# --- reservations ---


class ReservationCreate(Input):
    amount: Amount = Field(description="The expected spend, held until settled")
    metric: Metric = Metric.COST_USD
    user_id: ScopeId
    team_id: ScopeId | None = None
    api_key_id: ScopeId | None = None
    ttl_seconds: int = Field(
        default=600, ge=1, le=3600, description="After this the hold lapses and its amount is free again"
    )


class ReservationSettle(Input):
    actual: Amount = Field(description="What was really spent; may differ from the amount reserved")


class ReservationRead(BaseModel):
    reservation_id: uuid.UUID
    status: ReservationStatus
    metric: Metric
    amount: Money
    actual: Money | None
    user_id: str
    team_id: str | None
    api_key_id: str | None
    budget_ids: list[uuid.UUID] = Field(description="The budgets the amount was held against")
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
