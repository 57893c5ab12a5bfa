import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Numeric, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# Money to the micro-dollar, token counts far beyond any budget; Redis holds the same values as integers.
AMOUNT = Numeric(20, 6)


class Base(TargetBase, DeclarativeBase, target="usage"):
    """The usage target's tables; `Base.events` is its outbox and inbox."""


class Event(Base):
    """One usage event (a CloudEvent), stored once per (org, source, id) however often it arrives."""

    __tablename__ = "usage_event"
    __table_args__ = (Index(None, "org_id", "type", "time"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(255))
    time: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Copied out of `data` at ingest so meters group and filter on plain columns, not JSON lookups.
    user_id: Mapped[str | None] = mapped_column(String(128))
    team_id: Mapped[str | None] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(200))
    feature: Mapped[str | None] = mapped_column(String(128))
    ingested_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Meter(Base):
    """An aggregation over the org's events of one type (OpenMeter's meter)."""

    __tablename__ = "usage_meter"
    __table_args__ = (UniqueConstraint("org_id", "slug"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    event_type: Mapped[str] = mapped_column(String(200))
    aggregation: Mapped[str] = mapped_column(String(16))
    value_property: Mapped[str | None] = mapped_column(String(255))
    group_by: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Budget(Base):
    """A spending limit for the org, a team, a user or an API key, per day, per month or in total."""

    __tablename__ = "usage_budget"
    __table_args__ = (Index(None, "org_id", "scope", "scope_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str | None] = mapped_column(String(128))  # null for the org itself
    metric: Mapped[str] = mapped_column(String(16))
    limit: Mapped[Decimal] = mapped_column("limit", AMOUNT)
    period: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class BudgetSpend(Base):
    """The ledger: what was spent against a budget in one period. Redis counters are reseeded from it."""

    __tablename__ = "usage_budget_spend"

    budget_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("usage_budget.id", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    spent: Mapped[Decimal] = mapped_column(AMOUNT, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Reservation(Base):
    """An amount held against budgets until settled, released, or its expiry passes."""

    __tablename__ = "usage_reservation"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    actual: Mapped[Decimal | None] = mapped_column(AMOUNT)
    user_id: Mapped[str] = mapped_column(String(128))
    team_id: Mapped[str | None] = mapped_column(String(128))
    api_key_id: Mapped[str | None] = mapped_column(String(128))
    # The budgets whose Redis holds carry this reservation: the ones to release, even if deleted since.
    budget_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    status: Mapped[str] = mapped_column(String(16), default="reserved")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
