"""Request bodies and answers of messaging (Mattermost API v4 names: `display_name`, `root_id`,
`emoji_name`, `msg_count`, `mention_count`, `last_viewed_at`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from coder.shared.schemas import Input

# Mattermost's rules for a channel's handle and a username: lower-case letters, digits, `.`, `_`, `-`.
Handle = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
DisplayName = Annotated[str, Field(max_length=200)]
Blurb = Annotated[str, Field(max_length=1000)]
UserId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s@]+$")]
Message = Annotated[str, Field(min_length=1, max_length=16_383)]  # Mattermost's post size limit
EmojiName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_+-]+$")]
Props = Annotated[dict[str, Any], Field(max_length=50)]


class ChannelType(StrEnum):
    OPEN = "O"
    PRIVATE = "P"
    DIRECT = "D"


class ChannelCreate(Input):
    """A public (`O`) or private (`P`) channel; direct channels come from `POST /v1/channels/direct`."""

    name: Handle
    display_name: DisplayName = ""
    type: Annotated[ChannelType, Field(description="`O` public or `P` private")] = ChannelType.OPEN
    purpose: Blurb = ""
    header: Blurb = ""


class ChannelUpdate(Input):
    display_name: DisplayName | None = None
    purpose: Blurb | None = None
    header: Blurb | None = None


class DirectCreate(Input):
    """The two users of a direct channel; the caller must be one of them (both the same: a channel
    with yourself)."""

    user_ids: Annotated[list[UserId], Field(min_length=2, max_length=2)]


class ChannelRead(BaseModel):
    id: uuid.UUID
    name: str
    display_name: str
    type: str
    purpose: str
    header: str
    creator_id: str
    total_msg_count: int
    last_post_at: datetime | None
    created_at: datetime
    updated_at: datetime


class MemberAdd(Input):
    user_id: UserId


class MemberRead(BaseModel):
    channel_id: uuid.UUID
    user_id: str
    role: str
    msg_count: int
    mention_count: int
    last_viewed_at: datetime | None
    joined_at: datetime


class UnreadRead(BaseModel):
    """Posts written since the member last viewed the channel, and mentions of them among those."""

    channel_id: uuid.UUID
    msg_count: int
    mention_count: int
    last_viewed_at: datetime | None


class PostCreate(Input):
    channel_id: uuid.UUID
    message: Message
    root_id: Annotated[uuid.UUID | None, Field(description="The thread's first post, for a reply")] = None
    props: Props = Field(default_factory=dict)


class PostUpdate(Input):
    message: Message


class PostRead(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID
    user_id: str
    root_id: uuid.UUID | None
    message: str
    props: dict[str, Any]
    reply_count: int
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None


class ThreadRead(BaseModel):
    """A thread: its first post, then every reply oldest first (Mattermost's `order` of posts)."""

    order: list[uuid.UUID]
    posts: list[PostRead]


class SearchQuery(Input):
    """Words to find (PostgreSQL's web search syntax: `"a phrase"`, `or`, `-word`), in every channel
    the caller may read, or one."""

    terms: Annotated[str, Field(min_length=1, max_length=500)]
    channel_id: uuid.UUID | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class SearchRead(BaseModel):
    """Best matches first."""

    posts: list[PostRead]


class ReactionAdd(Input):
    emoji_name: EmojiName


class ReactionRead(BaseModel):
    post_id: uuid.UUID
    user_id: str
    emoji_name: str
    created_at: datetime


class ProfileUpdate(Input):
    username: Handle
    display_name: DisplayName = ""


class ProfileRead(BaseModel):
    user_id: str
    username: str
    display_name: str
    is_bot: bool


class BotCreate(Input):
    username: Handle
    display_name: DisplayName = ""
    description: Blurb = ""


class BotRead(BaseModel):
    """A bot; `user_id` is what its posts and memberships carry (the bot's id)."""

    id: uuid.UUID
    user_id: str
    username: str
    display_name: str
    description: str
    owner_id: str
    created_at: datetime


class BotCreated(BotRead):
    """`token` is shown once: the bot's credential for `POST /hooks/bot/posts`."""

    token: str


class HookCreate(Input):
    channel_id: uuid.UUID
    display_name: DisplayName = ""
    description: Blurb = ""


class HookRead(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID
    creator_id: str
    display_name: str
    description: str
    created_at: datetime


class HookCreated(HookRead):
    """`url` holds the hook's secret and is shown once: POST a Mattermost payload to it."""

    url: str


class HookPayload(Input):
    """Mattermost's incoming webhook payload (the fields this service uses)."""

    text: Message
    username: Annotated[str, Field(max_length=64)] | None = None
    icon_url: Annotated[str, Field(max_length=1000)] | None = None
    props: Props = Field(default_factory=dict)


class BotPost(Input):
    channel_id: uuid.UUID
    message: Message
    root_id: uuid.UUID | None = None
    props: Props = Field(default_factory=dict)
