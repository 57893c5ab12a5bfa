"""Events the messaging target publishes: posts written, changed and deleted, channels created."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from coder.shared.contracts import Contract


class PostFields(BaseModel):
    """Which post of which channel, by whom (a user's id, or a bot's user id when `from_bot`), and
    its text after the change. `root_id` is the thread's first post for a reply, else null."""

    post_id: str
    channel_id: str
    user_id: str
    root_id: str | None = None
    message: str
    from_bot: bool = False
    from_webhook: bool = False


class PostCreated(PostFields, Contract):
    """A post was written; `mentions` are the user ids it mentions (@username, @user-id, @channel)."""

    event_type: ClassVar[str] = "messaging.post.created"
    schema_version: ClassVar[int] = 1

    mentions: list[str]


class PostUpdated(PostFields, Contract):
    event_type: ClassVar[str] = "messaging.post.updated"
    schema_version: ClassVar[int] = 1


class PostDeleted(PostFields, Contract):
    """`message` is the text the post had."""

    event_type: ClassVar[str] = "messaging.post.deleted"
    schema_version: ClassVar[int] = 1


class ChannelCreated(Contract):
    """`type` is Mattermost's: `O` public, `P` private, `D` direct."""

    event_type: ClassVar[str] = "messaging.channel.created"
    schema_version: ClassVar[int] = 1

    channel_id: str
    name: str
    type: str
    creator_id: str
