import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Numeric, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# USD per million tokens, to the millionth of a dollar.
PRICE = Numeric(14, 6)


class Base(TargetBase, DeclarativeBase, target="ai"):
    """The ai target's tables; `Base.events` is its outbox and inbox."""


class Provider(Base):
    """Where models run: an API (OpenAI, Anthropic, or any OpenAI-compatible server) and its key."""

    __tablename__ = "ai_provider"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(2048))
    # The API key is never stored here: a path in `secrets` (the org's) and the field holding it.
    key_path: Mapped[str | None] = mapped_column(String(512))
    key_field: Mapped[str] = mapped_column(String(100), default="api_key")
    # Private providers (a local Ollama) may receive private context; external ones never do.
    external: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Deployment(Base):
    """One model at one provider, with its parameters, capabilities, context window and prices."""

    __tablename__ = "ai_deployment"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ai_provider.id", ondelete="RESTRICT"))
    model: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    capabilities: Mapped[list[str]] = mapped_column(JSONB, default=list)
    context_window: Mapped[int]
    max_output_tokens: Mapped[int]
    input_price: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    output_price: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    cached_price: Mapped[Decimal] = mapped_column(PRICE, default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ModelGroup(Base):
    """An alias clients call (`chat`, `autocomplete`): its deployments in order, and fallback groups."""

    __tablename__ = "ai_model_group"
    __table_args__ = (UniqueConstraint("org_id", "alias"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(100))
    # "ordered": deployments in the order given; "cheapest": by price, cheapest first.
    routing: Mapped[str] = mapped_column(String(16), default="ordered")
    # When a budget refuses the call, try the group's cheapest deployment before refusing.
    cheaper_on_budget: Mapped[bool] = mapped_column(default=False)
    # Other groups' aliases tried in this order once every deployment of this one failed.
    fallbacks: Mapped[list[str]] = mapped_column(JSONB, default=list)
    # The IDE roles this group serves by default (chat, autocomplete, embed, edit): /v1/config.
    roles: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class GroupMember(Base):
    """A deployment's place in a group."""

    __tablename__ = "ai_group_member"

    group_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ai_model_group.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ai_deployment.id", ondelete="RESTRICT"))
