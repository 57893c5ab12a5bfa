import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="execution"):
    """The execution target's tables; `Base.events` is its outbox and inbox."""


class Job(Base):
    """One run of a command or code, from the queue to its end."""

    __tablename__ = "execution_job"
    __table_args__ = (
        Index(None, "org_id", "created_at", "id"),
        # The queue: workers take the oldest queued job.
        Index(None, "created_at", postgresql_where="status = 'queued'"),
        Index(None, "heartbeat_at", postgresql_where="status = 'running'"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(128))
    reference: Mapped[str | None] = mapped_column(String(255))
    # queued -> running -> finished, or -> cancelled
    status: Mapped[str] = mapped_column(String(16), default="queued")
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None]
    signal: Mapped[int | None]
    # Which sandbox ran it (bubblewrap, rlimits, kubernetes); null until a worker takes it.
    sandbox: Mapped[str | None] = mapped_column(String(32))
    # What runs: argv, or code in a language (its source is a file of the working directory).
    command: Mapped[list[str] | None] = mapped_column(JSONB)
    language: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(Text)
    stdin: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    env: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    limits: Mapped[dict[str, Any]] = mapped_column(JSONB)
    network: Mapped[bool] = mapped_column(default=False)
    # Files in: path -> base64, as given; the declared outputs and, after the run, path -> base64.
    files: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    outputs: Mapped[list[str]] = mapped_column(JSONB, default=list)
    output_files: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    missing_outputs: Mapped[list[str]] = mapped_column(JSONB, default=list)
    stdout_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    stderr_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # The reservation held in `resources`, and the short-lived workload token (audience resources,
    # nothing but resources:reserve for this user) its release is sent with; cleared once released.
    reservation_id: Mapped[uuid.UUID | None]
    release_token: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class OutputChunk(Base):
    """A piece of a job's stdout or stderr, saved while it runs (what the stream endpoint reads)."""

    __tablename__ = "execution_output"
    __table_args__ = (Index(None, "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("execution_job.id", ondelete="CASCADE"))
    org_id: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str] = mapped_column(String(8))
    data: Mapped[str] = mapped_column(Text)
