import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from coder.services.calendar import recurrence
from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="calendar"):
    """The calendar target's tables; `Base.events` is its outbox and inbox."""


class Calendar(Base):
    """A user's calendar (CalDAV's calendar collection), optionally shared with a team."""

    __tablename__ = "calendar_calendar"
    __table_args__ = (Index(None, "org_id", "owner_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str] = mapped_column(String(128))
    team_id: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    time_zone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Event(Base):
    """A VEVENT series: its first occurrence, zone and recurrence. Occurrences are computed."""

    __tablename__ = "calendar_event"
    __table_args__ = (
        UniqueConstraint("calendar_id", "uid"),
        Index(None, "org_id", "calendar_id", "span_start"),
        Index(None, "next_reminder_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    calendar_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calendar_calendar.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(String(500), default="")
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    time_zone: Mapped[str] = mapped_column(String(64))
    all_day: Mapped[bool] = mapped_column(default=False)
    rrule: Mapped[str | None] = mapped_column(String(500))
    # UTC instants (ISO 8601) naming occurrences by their original start.
    exdates: Mapped[list[str]] = mapped_column(JSONB, default=list)
    rdates: Mapped[list[str]] = mapped_column(JSONB, default=list)
    reminders: Mapped[list[int]] = mapped_column(JSONB, default=list)  # minutes before each start
    transparent: Mapped[bool] = mapped_column(default=False)
    sequence: Mapped[int] = mapped_column(default=0)
    # [first start, last end) of every occurrence; an open-ended series has no end. Range queries
    # read these instead of expanding every series.
    span_start: Mapped[datetime]
    span_end: Mapped[datetime | None]
    # The earliest reminder not yet delivered; the reminder worker moves it on in the same
    # transaction that stages the reminders' events, so each is delivered once.
    next_reminder_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    overrides: Mapped[list["Override"]] = relationship(
        back_populates="event",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="Override.recurrence_id",
    )

    def series(self) -> recurrence.Series:
        """The series to expand (the zone was checked when stored)."""
        tz = recurrence.zone(self.time_zone)
        return recurrence.Series(
            start=self.start_at.astimezone(tz),
            end=self.end_at.astimezone(tz),
            time_zone=self.time_zone,
            all_day=self.all_day,
            rrule=self.rrule,
            exdates=frozenset(datetime.fromisoformat(v) for v in self.exdates),
            rdates=frozenset(datetime.fromisoformat(v) for v in self.rdates),
            overrides={
                o.recurrence_id.astimezone(UTC): recurrence.Override(o.start_at, o.end_at, o.fields)
                for o in self.overrides
            },
        )


class Override(Base):
    """One occurrence of a series edited (a VEVENT with RECURRENCE-ID): null fields are the series'."""

    __tablename__ = "calendar_override"
    __table_args__ = (UniqueConstraint("event_id", "recurrence_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calendar_event.id", ondelete="CASCADE"))
    recurrence_id: Mapped[datetime]
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)  # summary, description, location
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    event: Mapped[Event] = relationship(back_populates="overrides")
