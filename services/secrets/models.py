import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from coder.shared.db import TargetBase


class Base(TargetBase, DeclarativeBase, target="secrets"):
    """The secrets target's tables; `Base.events` is its outbox and inbox."""


class Secret(Base):
    """The metadata of a secret: where it lives and how its versions are kept."""

    __tablename__ = "secrets_secret"
    __table_args__ = (UniqueConstraint("org_id", "project", "environment", "path"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(100), default="")
    environment: Mapped[str] = mapped_column(String(100), default="")
    path: Mapped[str] = mapped_column(String(512))
    current_version: Mapped[int] = mapped_column(default=0)
    # Versions 1..oldest_version-1 were pruned by max_versions (or by destroying all metadata).
    oldest_version: Mapped[int] = mapped_column(default=1)
    max_versions: Mapped[int]
    cas_required: Mapped[bool] = mapped_column(default=False)
    custom_metadata: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    versions: Mapped[list["SecretVersion"]] = relationship(
        back_populates="secret",
        order_by="SecretVersion.version",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )


class SecretVersion(Base):
    __tablename__ = "secrets_version"

    secret_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("secrets_secret.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    # Null once destroyed: the value is gone for good, the version's history stays.
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_by: Mapped[str] = mapped_column(String(128))
    deleted_at: Mapped[datetime | None]
    destroyed: Mapped[bool] = mapped_column(default=False)

    secret: Mapped[Secret] = relationship(back_populates="versions", lazy="raise")


class AuditEntry(Base):
    """Who did what to which secret; written in the same transaction as the act (reads included)."""

    __tablename__ = "secrets_audit"
    __table_args__ = (Index(None, "org_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    project: Mapped[str] = mapped_column(String(100))
    environment: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(String(512))
    version: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
