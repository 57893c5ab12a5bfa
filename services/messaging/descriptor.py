"""messaging as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="messaging",
    port=3013,
    title="Messaging",
    package="coder.services.messaging",
    # Redis: the gateway's revocation list, and the pub/sub channel live events fan out through.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read channels, posts, threads, reactions and unread counts; search; live events"),
        "write": write(
            "Create channels, post, react, join and leave; manage your bots and incoming webhooks"
        ),
        "admin": admin("Delete any channel or post, and manage any bot or incoming webhook of the org"),
    },
    emits=(
        "messaging.post.created",
        "messaging.post.updated",
        "messaging.post.deleted",
        "messaging.channel.created",
    ),
    # Incoming webhooks (`/hooks/<secret>`) and bot posts (`/hooks/bot/posts`, a bot token) carry
    # credentials the gateway does not issue: messaging checks them itself.
    own_credentials=("/hooks/",),
    tools=(
        Tool(
            name="messaging_post",
            operation="POST /v1/posts",
            description=(
                "Post a message to a channel you are a member of (channel_id, message); with root_id, "
                "reply in that post's thread. @username, @user-id and @channel mention people."
            ),
        ),
        Tool(
            name="messaging_search",
            operation="POST /v1/posts/search",
            description=(
                "Full-text search over the posts of every channel you may read (or of one channel_id); "
                'terms in web search syntax: words, "a phrase", or, -excluded. Best matches first.'
            ),
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="messaging_list_channels",
            operation="GET /v1/channels",
            description=(
                "The channels you may read (public ones and your private and direct ones), by name; "
                "type=O|P|D filters, member=true keeps the ones you are in."
            ),
            read_only=True,
            idempotent=True,
        ),
    ),
)
