"""messaging's tables (Mattermost's model: channels, members with their unread marks, posts with
`root_id` threads, reactions), plus the per-user event streams a WebSocket client catches up from."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from coder.shared.db import TargetBase

# The text search configuration of `Post.search` (and of every query against it).
SEARCH_CONFIG = "english"


class Base(TargetBase, DeclarativeBase, target="messaging"):
    """The messaging target's tables; `Base.events` is its outbox and inbox."""


class Profile(Base):
    """A user (or bot) as messaging knows it: the username `@mentions` resolve. A user appears on
    first use with their id as username, and may choose another (`PUT /v1/users/me`)."""

    __tablename__ = "messaging_user"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (UniqueConstraint("org_id", "username"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    username: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    is_bot: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Channel(Base):
    """`type`: `O` public (open), `P` private, `D` direct (exactly two members, named by them)."""

    __tablename__ = "messaging_channel"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (UniqueConstraint("org_id", "name"), Index(None, "org_id", "type", "name"))

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    type: Mapped[str] = mapped_column(String(1))
    purpose: Mapped[str] = mapped_column(String(1000), default="")
    header: Mapped[str] = mapped_column(String(1000), default="")
    creator_id: Mapped[str] = mapped_column(String(128))
    # Posts ever written here (deletions do not give a message back): a member's unread count is
    # this minus their `msg_count`, Mattermost's bookkeeping.
    total_msg_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_post_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Member(Base):
    """A user's membership of a channel, with where they stopped reading (`msg_count` posts seen,
    `mention_count` mentions since)."""

    __tablename__ = "messaging_member"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (Index(None, "org_id", "user_id"),)

    channel_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messaging_channel.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    # `admin` (the creator) may rename, delete and remove others; `member` may post and leave.
    role: Mapped[str] = mapped_column(String(16), default="member")
    msg_count: Mapped[int] = mapped_column(BigInteger, default=0)
    mention_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_viewed_at: Mapped[datetime | None]
    joined_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Post(Base):
    """A message; a reply names its thread's first post in `root_id`. Deleted posts keep their row
    (`deleted_at`) so threads and event streams still make sense."""

    __tablename__ = "messaging_post"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (
        Index(None, "channel_id", "created_at", "id"),
        Index(None, "root_id", "created_at", "id"),
        Index(None, "search", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messaging_channel.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(128))
    root_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messaging_post.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(Text)
    # Mattermost's free-form properties; `from_bot` / `from_webhook` say who really wrote it.
    props: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    reply_count: Mapped[int] = mapped_column(Integer, default=0)
    search: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{SEARCH_CONFIG}', message)", persisted=True)
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]


class Reaction(Base):
    __tablename__ = "messaging_reaction"
    __mapper_args__ = {"eager_defaults": True}

    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messaging_post.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    emoji_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Mention(Base):
    """A user a post mentions (whether or not they are in its channel)."""

    __tablename__ = "messaging_mention"
    __table_args__ = (Index(None, "org_id", "user_id", "post_id"),)

    post_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messaging_post.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64))


class Bot(Base):
    """A bot account owned by a user; it posts with its own token (`cdr_bot_…`, stored hashed) and
    its user id is the bot's id."""

    __tablename__ = "messaging_bot"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    owner_id: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class IncomingHook(Base):
    """An incoming webhook: whoever holds its URL's secret (stored hashed) posts to its channel, as
    the hook's creator, marked `from_webhook`."""

    __tablename__ = "messaging_incoming_hook"
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    org_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messaging_channel.id", ondelete="CASCADE"))
    creator_id: Mapped[str] = mapped_column(String(128))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Stream(Base):
    """Each user's event stream: the last sequence id handed out. Taking ids locks the row until the
    transaction ends, so a user's events commit in sequence order and no id is ever skipped."""

    __tablename__ = "messaging_stream"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Broadcast(Base):
    """One live event (posted, post_edited, ...) as sent, once for all its recipients."""

    __tablename__ = "messaging_broadcast"
    __mapper_args__ = {"eager_defaults": True}
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    channel_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Delivery(Base):
    """Event `seq` of a user's stream: what a reconnecting client catches up from."""

    __tablename__ = "messaging_delivery"
    __table_args__ = (Index(None, "broadcast_id"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messaging_broadcast.id", ondelete="CASCADE")
    )
