from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

from prometheus_client.metrics import Histogram
from pydantic import BaseModel, Field, model_validator

from coder.shared.schemas import Input

# The latency SLO's threshold is a bucket bound of http_request_duration_seconds (the histogram every
# target exposes), so "good" is read from the histogram exactly, not interpolated.
LATENCY_BOUNDS = tuple(b for b in Histogram.DEFAULT_BUCKETS if b != float("inf"))
Name = Field(min_length=1, max_length=200)
TargetName = Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]*$")


class SloKind(StrEnum):
    AVAILABILITY = "availability"  # good: the answer was not a 5xx
    LATENCY = "latency"  # good: answered within threshold_seconds


class SloCreate(Input):
    name: str = Name
    target: str = TargetName
    kind: SloKind
    objective: float = Field(gt=0, lt=1, description="The share of good requests promised, e.g. 0.999")
    window_seconds: int = Field(
        default=30 * 86400, ge=300, le=400 * 86400, description="The rolling window, e.g. 30 days"
    )
    threshold_seconds: float | None = Field(
        default=None, description=f"Latency only: one of {', '.join(map(str, LATENCY_BOUNDS))}"
    )

    @model_validator(mode="after")
    def _threshold(self) -> SloCreate:
        if self.kind == SloKind.LATENCY and self.threshold_seconds not in LATENCY_BOUNDS:
            raise ValueError(
                f"threshold_seconds: a latency SLO needs one of {', '.join(map(str, LATENCY_BOUNDS))}"
            )
        if self.kind == SloKind.AVAILABILITY and self.threshold_seconds is not None:
            raise ValueError("threshold_seconds: only a latency SLO takes a threshold")
        return self


class SloStatus(BaseModel):
    start: datetime
    end: datetime
    total: float = Field(description="Requests the target answered in the range (health probes aside)")
    good: float
    bad: float
    errors_5xx: float
    sli: float | None = Field(description="good / total; null with no requests")
    error_budget: float = Field(description="1 - objective: the share of requests allowed to be bad")
    error_budget_remaining: float = Field(description="1 - (bad / total) / error_budget; below 0 when spent")
    burn_rates: dict[str, float] = Field(description="Error ratio over each window / error budget")
    scrapes: int


class SloRead(BaseModel):
    id: uuid.UUID
    name: str
    target: str
    kind: SloKind
    objective: float
    window_seconds: int
    threshold_seconds: float | None
    created_at: datetime
    status: SloStatus


class RuleKind(StrEnum):
    BURN_RATE = "burn_rate"
    THRESHOLD = "threshold"


class AlertRuleCreate(Input):
    name: str = Name
    kind: RuleKind
    for_seconds: int = Field(default=0, ge=0, le=7 * 86400, description="How long it must hold to fire")
    # burn_rate: both windows burn the SLO's budget faster than `factor` (14.4 over 1h and 5m pages).
    slo_id: uuid.UUID | None = None
    factor: float | None = Field(default=None, gt=0, le=10_000)
    long_window_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    short_window_seconds: int = Field(default=300, ge=60, le=30 * 86400)
    # threshold: a target's metric compared with `threshold`.
    target: str | None = Field(default=None, min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]*$")
    metric: Literal["up", "error_ratio", "request_rate"] | None = None
    comparison: Literal[">", ">=", "<", "<="] | None = None
    threshold: float | None = Field(default=None, ge=-1e12, le=1e12)
    window_seconds: int = Field(default=300, ge=60, le=30 * 86400)

    @model_validator(mode="after")
    def _fields(self) -> AlertRuleCreate:
        need = (
            ("slo_id", "factor")
            if self.kind == RuleKind.BURN_RATE
            else ("target", "metric", "comparison", "threshold")
        )
        for name in need:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: a {self.kind.value} rule needs it")
        if self.kind == RuleKind.BURN_RATE and self.short_window_seconds >= self.long_window_seconds:
            raise ValueError("short_window_seconds: must be shorter than long_window_seconds")
        return self


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class AlertRuleRead(BaseModel):
    id: uuid.UUID
    name: str
    kind: RuleKind
    for_seconds: int
    slo_id: uuid.UUID | None
    factor: float | None
    long_window_seconds: int | None
    short_window_seconds: int | None
    target: str | None
    metric: str | None
    comparison: str | None
    threshold: float | None
    window_seconds: int | None
    state: AlertState
    active_since: datetime | None
    state_changed_at: datetime | None
    last_value: float | None
    evaluated_at: datetime | None
    created_at: datetime


class TransitionRead(BaseModel):
    id: int
    rule_id: uuid.UUID
    previous_state: AlertState
    state: AlertState
    value: float | None
    at: datetime


class TargetHealth(BaseModel):
    target: str
    up: bool | None = Field(description="Ready at the last poll; null before the first")
    ready_status: int | None
    error: str | None
    scraped_at: datetime | None
    requests_total: float | None = Field(description="Its http_requests_total at the last poll")
    errors_total: float | None = Field(description="Of which 5xx")


class Health(BaseModel):
    status: Literal["ok", "degraded", "unknown"]
    targets: list[TargetHealth]


class Latency(BaseModel):
    avg: float | None
    p50: float | None
    p95: float | None


class MapNode(BaseModel):
    service: str
    spans: int
    server_spans: int
    errors: int


class MapEdge(BaseModel):
    source: str
    target: str
    calls: int
    errors: int
    error_ratio: float
    latency_ms: Latency


class ServiceMap(BaseModel):
    start: datetime
    end: datetime
    nodes: list[MapNode]
    edges: list[MapEdge]


class ModelMetrics(BaseModel):
    model: str
    calls: int
    streamed: int
    incomplete: int = Field(description="Calls whose outcome was not `completed` (cut, cancelled)")
    input_tokens: int
    output_tokens: int
    duration_ms: Latency
    time_to_first_token_ms: Latency


class GenAiMetrics(BaseModel):
    start: datetime
    end: datetime
    models: list[ModelMetrics]
