import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Index, Numeric, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TYPE_ANNOTATION_MAP, TargetBase

# AI credits are money: exact to the micro-unit, as usage counts dollars.
CREDITS = Numeric(20, 6)


class Base(TargetBase, DeclarativeBase, target="resources"):
    """The resources target's tables; `Base.events` is its outbox and inbox."""

    type_annotation_map = {**TYPE_ANNOTATION_MAP, int: BigInteger}


class Quota(Base):
    """The hard limits of one scope (the org, a team, a user), like a Kubernetes ResourceQuota's `hard`:
    a resource left null is not limited at this scope."""

    __tablename__ = "resources_quota"
    __table_args__ = (UniqueConstraint("org_id", "scope", "scope_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(8))
    # The team's or user's id; the org's own id for the org's quota, so the pair is always unique.
    scope_id: Mapped[str] = mapped_column(String(128))
    sandboxes: Mapped[int | None]
    cpu: Mapped[int | None]  # millicores
    memory: Mapped[int | None]  # bytes
    storage: Mapped[int | None]  # bytes
    ai_credits: Mapped[Decimal | None] = mapped_column(CREDITS)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Reservation(Base):
    """Resources held for a user (and team) until released or until `expires_at`. What is in use at a
    scope is the sum of its active, unexpired reservations: an expired one stops counting by itself."""

    __tablename__ = "resources_reservation"
    __table_args__ = (
        Index(None, "org_id", "user_id", "status"),
        Index(None, "org_id", "team_id", "status"),
        Index(None, "org_id", "status", "expires_at"),
        Index(None, "org_id", "created_at", "id"),
        Index(None, "status", "expires_at"),  # the reaper's scan, across orgs
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    team_id: Mapped[str | None] = mapped_column(String(128))
    sandboxes: Mapped[int] = mapped_column(default=0)
    cpu: Mapped[int] = mapped_column(default=0)
    memory: Mapped[int] = mapped_column(default=0)
    storage: Mapped[int] = mapped_column(default=0)
    ai_credits: Mapped[Decimal] = mapped_column(CREDITS, default=Decimal(0))
    # What it is for, in the caller's words (an execution job id), and which target asked.
    reference: Mapped[str | None] = mapped_column(String(255))
    requested_by: Mapped[str | None] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
