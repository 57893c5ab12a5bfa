"""messaging's logic: who may read and write where, posts with their threads, mentions and unread
marks, reactions, search, bots and incoming webhooks. Every change that clients see live is recorded
in the recipients' event streams (`live.record`) in the same transaction."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.messaging import live
from coder.services.messaging.models import (
    SEARCH_CONFIG,
    Base,
    Bot,
    Channel,
    IncomingHook,
    Member,
    Mention,
    Post,
    Profile,
    Reaction,
)
from coder.services.messaging.schemas import (
    BotCreate,
    ChannelCreate,
    ChannelType,
    ChannelUpdate,
    HookCreate,
    PostRead,
    ProfileUpdate,
)
from coder.shared.auth import Principal
from coder.shared.errors import Conflict, Forbidden, InvalidField, NotFound, Unauthorized
from coder.shared.repository import OrgScoped, owned_by, scoped

BOT_PREFIX = "cdr_bot_"
HOOK_PATH = "/api/messaging/hooks/"
# `@name` as Mattermost reads it: a user's handle or id, ending before punctuation that ends a sentence.
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][\w.\-:|]*[\w\-])")
CHANNEL_WIDE = frozenset({"channel", "all", "here"})
MAX_MENTIONS = 100


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Author:
    """Who writes a post: a user, a bot (its user id is the bot's id) or a user's incoming webhook."""

    org_id: str
    user_id: str
    props: dict[str, Any]
    is_admin: bool = False


def author_of(principal: Principal) -> Author:
    return Author(principal.org_id, principal.subject, {}, principal.can("messaging:admin"))


def post_read(post: Post) -> PostRead:
    return PostRead.model_validate(post, from_attributes=True)


def post_json(post: Post) -> dict[str, Any]:
    return post_read(post).model_dump(mode="json")


# --- users ---


async def profile(session: AsyncSession, org_id: str, user_id: str) -> Profile:
    found = await OrgScoped(Profile, session, org_id, "user").find(Profile.user_id == user_id)
    return found or Profile(org_id=org_id, user_id=user_id, username=user_id, display_name="", is_bot=False)


async def set_profile(session: AsyncSession, org_id: str, user_id: str, body: ProfileUpdate) -> Profile:
    taken = await OrgScoped(Profile, session, org_id, "user").find(
        Profile.username == body.username, Profile.user_id != user_id
    )
    if taken is not None:
        raise Conflict(f"username {body.username!r} is taken", slug="username-taken")
    row = await OrgScoped(Profile, session, org_id, "user").find(Profile.user_id == user_id, lock=True)
    if row is None:
        row = Profile(org_id=org_id, user_id=user_id, is_bot=False)
        session.add(row)
    elif row.is_bot:
        raise Forbidden("a bot's username changes with the bot")
    row.username, row.display_name = body.username, body.display_name
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"username {body.username!r} is taken", slug="username-taken") from None
    return row


# --- channels ---


def channels(session: AsyncSession, org_id: str) -> OrgScoped[Channel]:
    return OrgScoped(Channel, session, org_id, "channel")


async def membership(
    session: AsyncSession, org_id: str, channel_id: uuid.UUID, user_id: str
) -> Member | None:
    return await OrgScoped(Member, session, org_id, "member").find(
        Member.channel_id == channel_id, Member.user_id == user_id
    )


async def readable(
    session: AsyncSession, org_id: str, user_id: str, channel_id: uuid.UUID, *, lock: bool = False
) -> tuple[Channel, Member | None]:
    """A channel the user may read (public, or theirs); another's private or direct channel is a 404
    like a channel that does not exist."""
    channel = await channels(session, org_id).get(channel_id, Channel.id == channel_id, lock=lock)
    member = await membership(session, org_id, channel_id, user_id)
    if member is None and channel.type != ChannelType.OPEN:
        raise NotFound(f"no channel {channel_id}")
    return channel, member


async def joined(
    session: AsyncSession, org_id: str, user_id: str, channel_id: uuid.UUID, *, lock: bool = False
) -> tuple[Channel, Member]:
    """A channel the user is a member of (to post, react, view): 403 for a public one they have not
    joined."""
    channel, member = await readable(session, org_id, user_id, channel_id, lock=lock)
    if member is None:
        raise Forbidden(f"join channel {channel_id} first", slug="not-a-member")
    return channel, member


def visible_to(user_id: str) -> Any:
    """The condition on `Channel` for the channels a user may read."""
    theirs = select(Member.channel_id).where(Member.user_id == user_id)
    return or_(Channel.type == ChannelType.OPEN, Channel.id.in_(theirs))


async def _create_channel(
    session: AsyncSession, org_id: str, creator: str, values: dict[str, Any], members: list[str]
) -> Channel:
    channel = Channel(org_id=org_id, creator_id=creator, total_msg_count=0, **values)
    try:
        async with session.begin_nested():
            session.add(channel)
            await session.flush()
    except IntegrityError:
        raise Conflict(f"a channel named {values['name']!r} exists", slug="channel-exists") from None
    for user in dict.fromkeys(members):
        session.add(
            Member(
                channel_id=channel.id,
                user_id=user,
                org_id=org_id,
                role="admin" if user == creator else "member",
                msg_count=0,
                mention_count=0,
            )
        )
    await session.flush()
    await Base.events.publish(
        session,
        "messaging.channel.created",
        {"channel_id": str(channel.id), "name": channel.name, "type": channel.type, "creator_id": creator},
        org_id=org_id,
        subject=str(channel.id),
    )
    return channel


async def create_channel(session: AsyncSession, org_id: str, creator: str, body: ChannelCreate) -> Channel:
    if body.type == ChannelType.DIRECT:
        raise InvalidField("type", "direct channels are made with POST /v1/channels/direct")
    values = body.model_dump()
    values["type"] = body.type.value
    return await _create_channel(session, org_id, creator, values, [creator])


def direct_name(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return "dm-" + hashlib.sha256(f"{first}\0{second}".encode()).hexdigest()[:40]


async def direct_channel(
    session: AsyncSession, org_id: str, caller: str, user_ids: list[str]
) -> tuple[Channel, bool]:
    """The direct channel of two users, created on first ask (True) and found after (False)."""
    if caller not in user_ids:
        raise InvalidField("user_ids", "a direct channel is between the caller and one other user")
    name = direct_name(*user_ids)
    found = await channels(session, org_id).find(Channel.name == name)
    if found is not None:
        return found, False
    values = {"name": name, "display_name": "", "type": ChannelType.DIRECT.value, "purpose": "", "header": ""}
    try:
        return await _create_channel(session, org_id, caller, values, sorted(set(user_ids))), True
    except Conflict:  # the other user asked at the same moment
        return await channels(session, org_id).get(name, Channel.name == name), False


async def update_channel(
    session: AsyncSession, principal: Principal, channel_id: uuid.UUID, body: ChannelUpdate
) -> Channel:
    channel, _member = await joined(session, principal.org_id, principal.subject, channel_id, lock=True)
    if channel.type == ChannelType.DIRECT:
        raise Conflict("a direct channel has nothing to rename", slug="direct-channel")
    for key, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            raise InvalidField(key, "may not be null")
        setattr(channel, key, value)
    await session.flush()
    return channel


async def delete_channel(session: AsyncSession, principal: Principal, channel_id: uuid.UUID) -> None:
    channel, member = await readable(session, principal.org_id, principal.subject, channel_id, lock=True)
    if not principal.can("messaging:admin") and (member is None or member.role != "admin"):
        raise Forbidden("only the channel's admin or an org admin deletes a channel")
    await session.delete(channel)
    await session.flush()


async def add_member(
    session: AsyncSession, principal: Principal, channel_id: uuid.UUID, user_id: str
) -> tuple[Member, bool]:
    """Join a public channel yourself, or add someone as a member; True when the member is new."""
    channel, member = await readable(session, principal.org_id, principal.subject, channel_id, lock=True)
    if channel.type == ChannelType.DIRECT:
        raise Conflict("a direct channel's members are fixed", slug="direct-channel")
    if member is None and user_id != principal.subject:
        raise Forbidden(f"join channel {channel_id} before adding others", slug="not-a-member")
    existing = await membership(session, principal.org_id, channel_id, user_id)
    if existing is not None:
        return existing, False
    added = Member(
        channel_id=channel_id,
        user_id=user_id,
        org_id=principal.org_id,
        role="member",
        msg_count=channel.total_msg_count,  # history is not unread news
        mention_count=0,
    )
    session.add(added)
    await session.flush()
    return added, True


async def remove_member(
    session: AsyncSession, principal: Principal, channel_id: uuid.UUID, user_id: str
) -> None:
    channel, member = await readable(session, principal.org_id, principal.subject, channel_id, lock=True)
    if channel.type == ChannelType.DIRECT:
        raise Conflict("a direct channel's members are fixed", slug="direct-channel")
    removed = await membership(session, principal.org_id, channel_id, user_id)
    if removed is None:
        raise NotFound(f"{user_id} is not a member of channel {channel_id}")
    own = user_id == principal.subject
    if not own and not principal.can("messaging:admin") and (member is None or member.role != "admin"):
        raise Forbidden("only the channel's admin or an org admin removes others")
    await session.delete(removed)
    await session.flush()


async def member_ids(session: AsyncSession, org_id: str, channel_id: uuid.UUID) -> list[str]:
    query = scoped(Member, org_id).with_only_columns(Member.user_id).where(Member.channel_id == channel_id)
    return list((await session.execute(query)).scalars())


async def view(session: AsyncSession, principal: Principal, channel_id: uuid.UUID) -> Member:
    """Mark the channel read: its posts so far seen, no mention pending."""
    channel, member = await joined(session, principal.org_id, principal.subject, channel_id)
    member.msg_count = channel.total_msg_count
    member.mention_count = 0
    member.last_viewed_at = func.now()
    await session.flush()
    await session.refresh(member)
    return member


# --- posts ---


async def mentioned(session: AsyncSession, org_id: str, message: str, members: list[str]) -> list[str]:
    """The user ids `message` mentions: `@username` (messaging's usernames, bots' included),
    `@user-id`, and every member for `@channel`, `@all` or `@here`."""
    names = list(dict.fromkeys(MENTION.findall(message)))[:MAX_MENTIONS]
    if not names:
        return []
    found: set[str] = set()
    if CHANNEL_WIDE & {n.lower() for n in names}:
        found.update(members)
    lowered = [n.lower() for n in names]
    query = (
        scoped(Profile, org_id)
        .with_only_columns(Profile.user_id)
        .where(or_(Profile.username.in_(lowered), Profile.user_id.in_(names)))
    )
    found.update((await session.execute(query)).scalars())
    found.update(n for n in names if n in members)
    return sorted(found)


async def create_post(
    session: AsyncSession,
    cache: Redis | None,
    author: Author,
    channel_id: uuid.UUID,
    message: str,
    root_id: uuid.UUID | None,
    props: dict[str, Any],
    *,
    must_join: bool = True,
) -> Post:
    org_id = author.org_id
    if must_join:
        channel, _ = await joined(session, org_id, author.user_id, channel_id, lock=True)
    else:
        channel = await channels(session, org_id).get(channel_id, Channel.id == channel_id, lock=True)
    root: Post | None = None
    if root_id is not None:
        root = await OrgScoped(Post, session, org_id, "post").find(
            Post.id == root_id, Post.channel_id == channel_id, Post.deleted_at.is_(None), lock=True
        )
        if root is None:
            raise InvalidField("root_id", f"no post {root_id} in channel {channel_id}")
        if root.root_id is not None:
            raise InvalidField("root_id", "reply to the thread's first post (its root_id)")
        root.reply_count += 1
    post = Post(
        org_id=org_id,
        channel_id=channel_id,
        user_id=author.user_id,
        root_id=root_id,
        message=message,
        props={**props, **author.props},
        reply_count=0,
    )
    session.add(post)
    channel.total_msg_count += 1
    channel.last_post_at = func.now()
    await session.flush()
    members = await member_ids(session, org_id, channel_id)
    mentions = [m for m in await mentioned(session, org_id, message, members) if m != author.user_id]
    if mentions:
        await session.execute(
            pg_insert(Mention)
            .values([{"post_id": post.id, "user_id": m, "org_id": org_id} for m in mentions])
            .on_conflict_do_nothing()
        )
        await session.execute(
            update(Member)
            .where(owned_by(Member, org_id), Member.channel_id == channel_id, Member.user_id.in_(mentions))
            .values(mention_count=Member.mention_count + 1)
        )
    # Posting marks the channel read for its author, as viewing it would (Mattermost does the same).
    await session.execute(
        update(Member)
        .where(owned_by(Member, org_id), Member.channel_id == channel_id, Member.user_id == author.user_id)
        .values(msg_count=channel.total_msg_count, mention_count=0, last_viewed_at=func.now())
    )
    data = post_json(post)
    await live.record(
        session,
        cache,
        org_id,
        members,
        "posted",
        {"post": data, "channel_id": str(channel_id), "mentions": mentions},
        channel_id,
    )
    await Base.events.publish(
        session,
        "messaging.post.created",
        _post_event(post, mentions=mentions),
        org_id=org_id,
        subject=str(post.id),
    )
    return post


def _post_event(post: Post, **extra: Any) -> dict[str, Any]:
    """The data of a `messaging.post.*` event about `post`."""
    return {
        "post_id": str(post.id),
        "channel_id": str(post.channel_id),
        "user_id": post.user_id,
        "root_id": None if post.root_id is None else str(post.root_id),
        "message": post.message,
        "from_bot": post.props.get("from_bot") == "true",
        "from_webhook": post.props.get("from_webhook") == "true",
        **extra,
    }


async def readable_post(
    session: AsyncSession, principal: Principal, post_id: uuid.UUID, *, lock: bool = False
) -> tuple[Post, Channel, Member | None]:
    post = await OrgScoped(Post, session, principal.org_id, "post").get(
        post_id, Post.id == post_id, Post.deleted_at.is_(None), lock=lock
    )
    try:
        channel, member = await readable(session, principal.org_id, principal.subject, post.channel_id)
    except NotFound:
        raise NotFound(f"no post {post_id}") from None
    return post, channel, member


async def edit_post(
    session: AsyncSession, cache: Redis | None, principal: Principal, post_id: uuid.UUID, message: str
) -> Post:
    post, _, _ = await readable_post(session, principal, post_id, lock=True)
    if post.user_id != principal.subject:
        raise Forbidden("only its author edits a post")
    post.message = message
    post.edited_at = func.now()
    await session.flush()
    await session.refresh(post)
    members = await member_ids(session, principal.org_id, post.channel_id)
    data = {"post": post_json(post), "channel_id": str(post.channel_id)}
    await live.record(session, cache, principal.org_id, members, "post_edited", data, post.channel_id)
    await Base.events.publish(
        session, "messaging.post.updated", _post_event(post), org_id=post.org_id, subject=str(post.id)
    )
    return post


async def delete_post(
    session: AsyncSession, cache: Redis | None, principal: Principal, post_id: uuid.UUID
) -> None:
    """Soft delete: the row stays (threads and streams refer to it), its text goes."""
    post, _, member = await readable_post(session, principal, post_id, lock=True)
    allowed = post.user_id == principal.subject or principal.can("messaging:admin")
    if not allowed and (member is None or member.role != "admin"):
        raise Forbidden("only its author, the channel's admin or an org admin deletes a post")
    await Base.events.publish(
        session, "messaging.post.deleted", _post_event(post), org_id=post.org_id, subject=str(post.id)
    )
    post.message = ""
    post.props = {k: v for k, v in post.props.items() if k in ("from_bot", "from_webhook")}
    post.deleted_at = func.now()
    if post.root_id is not None:
        await session.execute(
            update(Post)
            .where(owned_by(Post, principal.org_id), Post.id == post.root_id)
            .values(reply_count=Post.reply_count - 1)
        )
    await session.flush()
    await session.refresh(post)
    members = await member_ids(session, principal.org_id, post.channel_id)
    data = {"post": post_json(post), "channel_id": str(post.channel_id)}
    await live.record(session, cache, principal.org_id, members, "post_deleted", data, post.channel_id)


async def thread(session: AsyncSession, principal: Principal, post_id: uuid.UUID) -> list[Post]:
    post, _, _ = await readable_post(session, principal, post_id)
    root_id = post.root_id or post.id
    query = (
        scoped(Post, principal.org_id)
        .where(or_(Post.id == root_id, Post.root_id == root_id), Post.deleted_at.is_(None))
        .order_by(Post.root_id.is_not(None), Post.created_at, Post.id)
    )
    return list((await session.execute(query)).scalars())


async def search(
    session: AsyncSession, principal: Principal, terms: str, channel_id: uuid.UUID | None, limit: int
) -> list[Post]:
    """Posts matching `terms` (web search syntax) in the channels the caller may read, best first."""
    query_ts = func.websearch_to_tsquery(SEARCH_CONFIG, terms)
    query = (
        scoped(Post, principal.org_id)
        .join(Channel, Channel.id == Post.channel_id)
        .where(Post.search.op("@@")(query_ts), Post.deleted_at.is_(None), visible_to(principal.subject))
        .order_by(func.ts_rank(Post.search, query_ts).desc(), Post.created_at.desc(), Post.id)
        .limit(limit)
    )
    if channel_id is not None:
        await readable(session, principal.org_id, principal.subject, channel_id)
        query = query.where(Post.channel_id == channel_id)
    return list((await session.execute(query)).scalars())


# --- reactions ---


async def react(
    session: AsyncSession, cache: Redis | None, principal: Principal, post_id: uuid.UUID, emoji: str
) -> tuple[Reaction, bool]:
    post, channel, member = await readable_post(session, principal, post_id)
    if member is None:
        raise Forbidden(f"join channel {channel.id} first", slug="not-a-member")
    existing = await OrgScoped(Reaction, session, principal.org_id, "reaction").find(
        Reaction.post_id == post_id, Reaction.user_id == principal.subject, Reaction.emoji_name == emoji
    )
    if existing is not None:
        return existing, False
    reaction = Reaction(post_id=post_id, user_id=principal.subject, emoji_name=emoji, org_id=principal.org_id)
    try:
        async with session.begin_nested():
            session.add(reaction)
            await session.flush()
    except IntegrityError:  # the same reaction at the same moment: it is there
        return await OrgScoped(Reaction, session, principal.org_id, "reaction").get(
            emoji,
            Reaction.post_id == post_id,
            Reaction.user_id == principal.subject,
            Reaction.emoji_name == emoji,
        ), False
    await _reaction_event(session, cache, principal.org_id, post, "reaction_added", reaction)
    return reaction, True


async def unreact(
    session: AsyncSession, cache: Redis | None, principal: Principal, post_id: uuid.UUID, emoji: str
) -> None:
    post, _, _ = await readable_post(session, principal, post_id)
    reactions = OrgScoped(Reaction, session, principal.org_id, "reaction")
    reaction = await reactions.get(
        emoji,
        Reaction.post_id == post_id,
        Reaction.user_id == principal.subject,
        Reaction.emoji_name == emoji,
    )
    await _reaction_event(session, cache, principal.org_id, post, "reaction_removed", reaction)
    await session.delete(reaction)
    await session.flush()


async def _reaction_event(
    session: AsyncSession, cache: Redis | None, org_id: str, post: Post, event: str, reaction: Reaction
) -> None:
    members = await member_ids(session, org_id, post.channel_id)
    data = {
        "reaction": {
            "post_id": str(reaction.post_id),
            "user_id": reaction.user_id,
            "emoji_name": reaction.emoji_name,
            "created_at": reaction.created_at.isoformat(),
        },
        "channel_id": str(post.channel_id),
    }
    await live.record(session, cache, org_id, members, event, data, post.channel_id)


# --- bots ---


def new_bot_token() -> str:
    return BOT_PREFIX + secrets.token_urlsafe(32)


async def create_bot(session: AsyncSession, principal: Principal, body: BotCreate) -> tuple[Bot, str]:
    token = new_bot_token()
    bot = Bot(
        org_id=principal.org_id,
        username=body.username,
        display_name=body.display_name,
        description=body.description,
        owner_id=principal.subject,
        token_hash=digest(token),
    )
    session.add(bot)
    await session.flush()
    try:
        async with session.begin_nested():
            session.add(
                Profile(
                    org_id=principal.org_id,
                    user_id=str(bot.id),
                    username=body.username,
                    display_name=body.display_name,
                    is_bot=True,
                )
            )
            await session.flush()
    except IntegrityError:
        raise Conflict(f"username {body.username!r} is taken", slug="username-taken") from None
    return bot, token


def bots(session: AsyncSession, org_id: str) -> OrgScoped[Bot]:
    return OrgScoped(Bot, session, org_id, "bot")


async def managed_bot(session: AsyncSession, principal: Principal, bot_id: uuid.UUID) -> Bot:
    bot = await bots(session, principal.org_id).get(bot_id, Bot.id == bot_id, lock=True)
    if bot.owner_id != principal.subject and not principal.can("messaging:admin"):
        raise Forbidden("only the bot's owner or an org admin manages a bot")
    return bot


async def delete_bot(session: AsyncSession, principal: Principal, bot_id: uuid.UUID) -> None:
    bot = await managed_bot(session, principal, bot_id)
    await OrgScoped(Profile, session, principal.org_id, "user").delete(bot_id, Profile.user_id == str(bot.id))
    await session.delete(bot)
    await session.flush()


async def rotate_bot_token(session: AsyncSession, principal: Principal, bot_id: uuid.UUID) -> tuple[Bot, str]:
    bot = await managed_bot(session, principal, bot_id)
    token = new_bot_token()
    bot.token_hash = digest(token)
    await session.flush()
    return bot, token


async def bot_by_token(session: AsyncSession, token: str | None) -> Bot:
    """The bot a `cdr_bot_` token belongs to (any org: the token names it); 401 for anything else."""
    if not token or not token.startswith(BOT_PREFIX):
        raise Unauthorized("a bot token (cdr_bot_…) is required")
    bot = (await session.execute(select(Bot).where(Bot.token_hash == digest(token)))).scalar_one_or_none()
    if bot is None:
        raise Unauthorized("unknown or rotated bot token")
    return bot


# --- incoming webhooks ---


async def create_hook(
    session: AsyncSession, principal: Principal, body: HookCreate
) -> tuple[IncomingHook, str]:
    await joined(session, principal.org_id, principal.subject, body.channel_id)
    key = secrets.token_urlsafe(32)
    hook = IncomingHook(
        org_id=principal.org_id,
        channel_id=body.channel_id,
        creator_id=principal.subject,
        display_name=body.display_name,
        description=body.description,
        key_hash=digest(key),
    )
    session.add(hook)
    await session.flush()
    return hook, key


def hooks(session: AsyncSession, org_id: str) -> OrgScoped[IncomingHook]:
    return OrgScoped(IncomingHook, session, org_id, "incoming webhook")


async def delete_hook(session: AsyncSession, principal: Principal, hook_id: uuid.UUID) -> None:
    hook = await hooks(session, principal.org_id).get(hook_id, IncomingHook.id == hook_id)
    if hook.creator_id != principal.subject and not principal.can("messaging:admin"):
        raise Forbidden("only the hook's creator or an org admin deletes a hook")
    await session.delete(hook)
    await session.flush()


async def hook_by_key(session: AsyncSession, key: str) -> IncomingHook:
    """The hook whose URL holds `key` (any org: the key names it); 401 for an unknown key."""
    query = select(IncomingHook).where(IncomingHook.key_hash == digest(key))
    hook = (await session.execute(query)).scalar_one_or_none()
    if hook is None:
        raise Unauthorized("unknown or deleted incoming webhook")
    return hook
