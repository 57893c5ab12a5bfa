"""Tables of `logging` (Loki's model on PostgreSQL): a stream is one org's label set, a line belongs to
one stream. Queries resolve the label matchers against the few streams first, then read lines by
(org, stream, time) with the text filters on a trigram index."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, LargeBinary, SmallInteger, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="logging"):
    """The logging target's tables; `Base.events` is its outbox and inbox."""


class Stream(Base):
    """One org's label set; `digest` (SHA-256 of the sorted labels) makes it unique per org."""

    __tablename__ = "logging_stream"
    __table_args__ = (Index(None, "org_id", "digest", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    labels: Mapped[dict[str, str]] = mapped_column(JSONB)
    # Nanoseconds since the epoch of the stream's oldest and newest line: label discovery over a range.
    first_ts: Mapped[int] = mapped_column(BigInteger)
    last_ts: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Line(Base):
    """One log line. `ts` is Loki's nanosecond timestamp, kept exact; `id` orders equal timestamps
    and is the live tail's position (ingest order)."""

    __tablename__ = "logging_line"
    __table_args__ = (
        Index(None, "org_id", "stream_id", "ts", "id"),
        Index(None, "org_id", "ts", "id"),
        Index(None, "org_id", "trace_id", postgresql_where="trace_id IS NOT NULL"),
        Index(None, "org_id", "request_id", postgresql_where="request_id IS NOT NULL"),
        # Text filters (`|= "text"`, `|~ "re"`) are LIKE and regex matches the trigram index serves.
        Index(
            "logging_ix_logging_line_line_trgm",
            "line",
            postgresql_using="gin",
            postgresql_ops={"line": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    stream_id: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(16))
    line: Mapped[str] = mapped_column(Text)
    # Loki's structured metadata: per-line key/values that are not labels (no stream per value).
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))


class Retention(Base):
    """How long an org's lines are kept; orgs without a row keep LOGGING_DEFAULT_RETENTION_DAYS."""

    __tablename__ = "logging_retention"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class SecretFingerprint(Base):
    """A keyed hash of a value stored in `secrets` (never the value): a token of a pushed line whose
    hash is here is redacted. `length` lets ingest hash only the tokens that could match."""

    __tablename__ = "logging_secret_fingerprint"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    length: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
