"""Tables of `observability`.

`observability_scrape` holds one row per target per poll: the counters of its /metrics summed over
routes (requests by status, latency histogram buckets), cumulative as the target exposes them, so a
window's numbers are increases between rows (Prometheus' `increase`, counter resets included).
Scrapes are platform-wide: their `org_id` is `PLATFORM`. Everything else belongs to one org.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Identity, Index, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# The org of platform-wide rows (a poll of the platform's own targets); no org id takes this form.
PLATFORM = "~platform"


class Base(TargetBase, DeclarativeBase, target="observability"):
    """The observability target's tables; `Base.events` is its outbox and inbox."""


class Scrape(Base):
    """One poll of one target: readiness and its /metrics' request counters, as read."""

    __tablename__ = "observability_scrape"
    __table_args__ = (Index(None, "org_id", "target", "at"), Index(None, "at"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(63))
    at: Mapped[datetime]
    # Ready: /readyz answered 200 and /metrics was read.
    up: Mapped[bool]
    ready_status: Mapped[int | None] = mapped_column(SmallInteger)
    error: Mapped[str | None] = mapped_column(Text)
    # Cumulative, summed over method and route: {"200": 12, "503": 1}.
    requests: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    # http_request_duration_seconds' cumulative buckets {"0.1": 9, "+Inf": 13}, count and sum.
    buckets: Mapped[dict[str, float]] = mapped_column(JSONB, default=dict)
    latency_count: Mapped[float] = mapped_column(Float, default=0.0)
    latency_sum: Mapped[float] = mapped_column(Float, default=0.0)


class Slo(Base):
    """An objective on one target: availability (non-5xx) or latency (under a histogram bucket)."""

    __tablename__ = "observability_slo"
    __table_args__ = (UniqueConstraint("org_id", "name"), Index(None, "org_id", "created_at", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    objective: Mapped[float] = mapped_column(Float)
    window_seconds: Mapped[int] = mapped_column(BigInteger)
    threshold_seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AlertRule(Base):
    """A burn-rate rule on an SLO (both windows over the factor) or a threshold on a target's metric,
    with its state: inactive, pending (true for less than `for_seconds`) or firing."""

    __tablename__ = "observability_alert_rule"
    __table_args__ = (UniqueConstraint("org_id", "name"), Index(None, "org_id", "created_at", "id"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    # burn_rate
    slo_id: Mapped[uuid.UUID | None]
    factor: Mapped[float | None] = mapped_column(Float)
    long_window_seconds: Mapped[int | None] = mapped_column(BigInteger)
    short_window_seconds: Mapped[int | None] = mapped_column(BigInteger)
    # threshold
    target: Mapped[str | None] = mapped_column(String(63))
    metric: Mapped[str | None] = mapped_column(String(32))
    comparison: Mapped[str | None] = mapped_column(String(2))
    threshold: Mapped[float | None] = mapped_column(Float)
    window_seconds: Mapped[int | None] = mapped_column(BigInteger)
    for_seconds: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default="inactive")
    active_since: Mapped[datetime | None]
    state_changed_at: Mapped[datetime | None]
    last_value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class AlertTransition(Base):
    """One change of a rule's state: its history."""

    __tablename__ = "observability_alert_transition"
    __table_args__ = (Index(None, "org_id", "rule_id", "at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[uuid.UUID]
    previous_state: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime]


class Span(Base):
    """One OTLP span as the service map needs it."""

    __tablename__ = "observability_span"
    __table_args__ = (
        Index(None, "org_id", "trace_id", "span_id"),
        Index(None, "org_id", "start_at"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    trace_id: Mapped[str] = mapped_column(String(32))
    span_id: Mapped[str] = mapped_column(String(16))
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    service: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[int] = mapped_column(SmallInteger)
    start_at: Mapped[datetime]
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[bool]
    # Where a client span went, when it says so (peer.service, server.address).
    peer: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    received_at: Mapped[datetime]


class GenAiCall(Base):
    """One model call, from ai's `ai.request.completed` event."""

    __tablename__ = "observability_genai_call"
    __table_args__ = (UniqueConstraint("event_id"), Index(None, "org_id", "at"), Index(None, "at"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    stream: Mapped[bool | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime]
