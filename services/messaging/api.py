"""HTTP and WebSocket routes of `messaging` (Mattermost API v4 shapes). Paths are relative to
`/api/messaging` at the gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response, WebSocket, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import Select
from starlette.websockets import WebSocketDisconnect

from coder.services.messaging import live, service
from coder.services.messaging.config import MessagingSettings
from coder.services.messaging.models import Bot, Channel, IncomingHook, Member, Post, Reaction
from coder.services.messaging.schemas import (
    BotCreate,
    BotCreated,
    BotPost,
    BotRead,
    ChannelCreate,
    ChannelRead,
    ChannelType,
    ChannelUpdate,
    DirectCreate,
    EmojiName,
    HookCreate,
    HookCreated,
    HookPayload,
    HookRead,
    MemberAdd,
    MemberRead,
    PostCreate,
    PostRead,
    PostUpdate,
    ProfileRead,
    ProfileUpdate,
    ReactionAdd,
    ReactionRead,
    SearchQuery,
    SearchRead,
    ThreadRead,
    UnreadRead,
    UserId,
)
from coder.shared.auth import Principal, bearer_token, require, websocket_principal
from coder.shared.db import SessionDep
from coder.shared.deps import CacheDep
from coder.shared.errors import InvalidField, Problem, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped
from coder.shared.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["messaging"])

Reader = Annotated[Principal, require("messaging:read")]
Writer = Annotated[Principal, require("messaging:write")]
UserPath = Annotated[UserId, Path(description="A user's id (a bot's user id is the bot's id)")]


def _channel(channel: Channel) -> ChannelRead:
    return ChannelRead.model_validate(channel, from_attributes=True)


def _member(member: Member) -> MemberRead:
    return MemberRead.model_validate(member, from_attributes=True)


def _bot(bot: Bot) -> BotRead:
    return BotRead(
        id=bot.id,
        user_id=str(bot.id),
        username=bot.username,
        display_name=bot.display_name,
        description=bot.description,
        owner_id=bot.owner_id,
        created_at=bot.created_at,
    )


def _hook(hook: IncomingHook) -> HookRead:
    return HookRead.model_validate(hook, from_attributes=True)


def _reaction(reaction: Reaction) -> ReactionRead:
    return ReactionRead.model_validate(reaction, from_attributes=True)


# --- users ---


@router.get("/users/me", response_model=ProfileRead)
async def read_me(session: SessionDep, principal: Reader) -> ProfileRead:
    """Your messaging profile: the username others `@mention` you by (your user id until you set one)."""
    found = await service.profile(session, principal.org_id, principal.subject)
    return ProfileRead.model_validate(found, from_attributes=True)


@router.put("/users/me", response_model=ProfileRead, responses=problem_responses({409}))
async def set_me(body: ProfileUpdate, session: SessionDep, principal: Writer) -> ProfileRead:
    """Choose your username (unique in the organization, bots' included; 409 when taken)."""
    row = await service.set_profile(session, principal.org_id, principal.subject, body)
    return ProfileRead.model_validate(row, from_attributes=True)


# --- channels ---


@router.post(
    "/channels",
    response_model=ChannelRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_channel(body: ChannelCreate, session: SessionDep, principal: Writer) -> ChannelRead:
    """Create a public (`O`) or private (`P`) channel; you are its first member and its admin. Names are
    unique in the organization (409)."""
    return _channel(await service.create_channel(session, principal.org_id, principal.subject, body))


@router.post("/channels/direct", response_model=ChannelRead, status_code=status.HTTP_201_CREATED)
async def create_direct(
    body: DirectCreate, session: SessionDep, principal: Writer, response: Response
) -> ChannelRead:
    """The direct channel between you and another user: created on first call (201), the same channel
    on every later call by either of them (200)."""
    channel, created = await service.direct_channel(
        session, principal.org_id, principal.subject, body.user_ids
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _channel(channel)


@router.get("/channels", response_model=Page[ChannelRead])
async def list_channels(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    type_: Annotated[
        ChannelType | None, Query(alias="type", description="Only channels of this type")
    ] = None,
    member: Annotated[bool, Query(description="Only channels you are a member of")] = False,
) -> Page[ChannelRead]:
    """The channels you may read (every public one, and your private and direct ones), by name."""
    query = scoped(Channel, principal.org_id).where(service.visible_to(principal.subject))
    if type_ is not None:
        query = query.where(Channel.type == type_.value)
    if member:
        query = query.where(
            Channel.id.in_(
                scoped(Member, principal.org_id)
                .with_only_columns(Member.channel_id)
                .where(Member.user_id == principal.subject)
            )
        )
    rows = await paginate(session, query, (Channel.name, Channel.id), params)
    return rows.page(_channel)


@router.get("/channels/{channel_id}", response_model=ChannelRead)
async def read_channel(channel_id: uuid.UUID, session: SessionDep, principal: Reader) -> ChannelRead:
    channel, _ = await service.readable(session, principal.org_id, principal.subject, channel_id)
    return _channel(channel)


@router.patch("/channels/{channel_id}", response_model=ChannelRead, responses=problem_responses({409}))
async def update_channel(
    channel_id: uuid.UUID, body: ChannelUpdate, session: SessionDep, principal: Writer
) -> ChannelRead:
    """Change a channel's display name, purpose or header (members only)."""
    return _channel(await service.update_channel(session, principal, channel_id, body))


@router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete a channel with its posts (its admin, or an org admin with `messaging:admin`)."""
    await service.delete_channel(session, principal, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/channels/{channel_id}/members", response_model=Page[MemberRead])
async def list_members(
    channel_id: uuid.UUID, session: SessionDep, principal: Reader, params: PageDep
) -> Page[MemberRead]:
    query = scoped(Member, principal.org_id).where(Member.channel_id == channel_id)
    rows = await paginate(session, query, (Member.user_id,), params)  # a bad cursor is a 400 first
    await service.readable(session, principal.org_id, principal.subject, channel_id)
    return rows.page(_member)


@router.post(
    "/channels/{channel_id}/members",
    response_model=MemberRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def add_member(
    channel_id: uuid.UUID, body: MemberAdd, session: SessionDep, principal: Writer, response: Response
) -> MemberRead:
    """Join a public channel (your own user id), or add a user or bot to a channel you are in. 200 when
    they already were a member; 409 for a direct channel."""
    member, added = await service.add_member(session, principal, channel_id, body.user_id)
    if not added:
        response.status_code = status.HTTP_200_OK
    return _member(member)


@router.delete(
    "/channels/{channel_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
)
async def remove_member(
    channel_id: uuid.UUID, user_id: UserPath, session: SessionDep, principal: Writer
) -> Response:
    """Leave a channel, or (its admin) remove someone."""
    await service.remove_member(session, principal, channel_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/channels/{channel_id}/view", response_model=UnreadRead)
async def view_channel(channel_id: uuid.UUID, session: SessionDep, principal: Reader) -> UnreadRead:
    """Mark a channel read: its unread and mention counts go to 0."""
    member = await service.view(session, principal, channel_id)
    return UnreadRead(
        channel_id=channel_id, msg_count=0, mention_count=0, last_viewed_at=member.last_viewed_at
    )


@router.get("/channels/{channel_id}/unread", response_model=UnreadRead)
async def channel_unread(channel_id: uuid.UUID, session: SessionDep, principal: Reader) -> UnreadRead:
    """Posts since you last viewed the channel, and mentions of you among them."""
    channel, member = await service.joined(session, principal.org_id, principal.subject, channel_id)
    return UnreadRead(
        channel_id=channel_id,
        msg_count=channel.total_msg_count - member.msg_count,
        mention_count=member.mention_count,
        last_viewed_at=member.last_viewed_at,
    )


@router.get("/unreads", response_model=Page[UnreadRead])
async def list_unreads(session: SessionDep, principal: Reader, params: PageDep) -> Page[UnreadRead]:
    """Unread and mention counts of every channel you are a member of, by channel id."""
    query = cast(
        "Select[Any]",
        scoped(Member, principal.org_id)
        .join(Channel, Channel.id == Member.channel_id)
        .with_only_columns(
            Member.channel_id,
            Channel.total_msg_count - Member.msg_count,
            Member.mention_count,
            Member.last_viewed_at,
        )
        .where(Member.user_id == principal.subject),
    )
    rows = await paginate(session, query, (Member.channel_id,), params)
    return rows.page(
        lambda row: UnreadRead(
            channel_id=row[0], msg_count=row[1], mention_count=row[2], last_viewed_at=row[3]
        )
    )


@router.get("/channels/{channel_id}/posts", response_model=Page[PostRead])
async def list_posts(
    channel_id: uuid.UUID, session: SessionDep, principal: Reader, params: PageDep
) -> Page[PostRead]:
    """A channel's posts, replies included, newest first."""
    query = scoped(Post, principal.org_id).where(Post.channel_id == channel_id, Post.deleted_at.is_(None))
    rows = await paginate(session, query, (Post.created_at, Post.id), params, descending=True)
    await service.readable(session, principal.org_id, principal.subject, channel_id)
    return rows.page(service.post_read)


# --- posts ---


@router.post(
    "/posts", response_model=PostRead, status_code=status.HTTP_201_CREATED, responses=problem_responses({404})
)
async def create_post(body: PostCreate, session: SessionDep, principal: Writer, cache: CacheDep) -> PostRead:
    """Post to a channel you are a member of; with `root_id`, a reply in that post's thread.
    `@username`, `@user-id` and `@channel` mention users: their mention counts go up."""
    post = await service.create_post(
        session, cache, service.author_of(principal), body.channel_id, body.message, body.root_id, body.props
    )
    return service.post_read(post)


@router.get("/posts/{post_id}", response_model=PostRead)
async def read_post(post_id: uuid.UUID, session: SessionDep, principal: Reader) -> PostRead:
    post, _, _ = await service.readable_post(session, principal, post_id)
    return service.post_read(post)


@router.patch("/posts/{post_id}", response_model=PostRead)
async def edit_post(
    post_id: uuid.UUID, body: PostUpdate, session: SessionDep, principal: Writer, cache: CacheDep
) -> PostRead:
    """Change your post's text."""
    return service.post_read(await service.edit_post(session, cache, principal, post_id, body.message))


@router.delete("/posts/{post_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_post(
    post_id: uuid.UUID, session: SessionDep, principal: Writer, cache: CacheDep
) -> Response:
    """Delete a post (yours; any, for the channel's admin or an org admin)."""
    await service.delete_post(session, cache, principal, post_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/posts/{post_id}/thread", response_model=ThreadRead)
async def read_thread(post_id: uuid.UUID, session: SessionDep, principal: Reader) -> ThreadRead:
    """The thread of a post (of the post itself when it is a root): the root first, then replies."""
    posts = await service.thread(session, principal, post_id)
    return ThreadRead(order=[p.id for p in posts], posts=[service.post_read(p) for p in posts])


@router.post("/posts/search", response_model=SearchRead, responses=problem_responses({404}))
async def search_posts(body: SearchQuery, session: SessionDep, principal: Reader) -> SearchRead:
    """Full-text search over the posts of every channel you may read (or of `channel_id`), best match
    first. `terms` takes web search syntax: words, `"a phrase"`, `or`, `-excluded`."""
    posts = await service.search(session, principal, body.terms, body.channel_id, body.limit)
    return SearchRead(posts=[service.post_read(p) for p in posts])


@router.post("/posts/{post_id}/reactions", response_model=ReactionRead, status_code=status.HTTP_201_CREATED)
async def add_reaction(
    post_id: uuid.UUID,
    body: ReactionAdd,
    session: SessionDep,
    principal: Writer,
    cache: CacheDep,
    response: Response,
) -> ReactionRead:
    """React to a post with an emoji name (200 when you already had)."""
    reaction, added = await service.react(session, cache, principal, post_id, body.emoji_name)
    if not added:
        response.status_code = status.HTTP_200_OK
    return _reaction(reaction)


@router.get("/posts/{post_id}/reactions", response_model=list[ReactionRead])
async def list_reactions(post_id: uuid.UUID, session: SessionDep, principal: Reader) -> list[ReactionRead]:
    await service.readable_post(session, principal, post_id)
    query = (
        scoped(Reaction, principal.org_id)
        .where(Reaction.post_id == post_id)
        .order_by(Reaction.created_at, Reaction.user_id, Reaction.emoji_name)
    )
    return [_reaction(r) for r in (await session.execute(query)).scalars()]


@router.delete("/posts/{post_id}/reactions/{emoji_name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_reaction(
    post_id: uuid.UUID,
    emoji_name: Annotated[EmojiName, Path()],
    session: SessionDep,
    principal: Writer,
    cache: CacheDep,
) -> Response:
    """Take your reaction back."""
    await service.unreact(session, cache, principal, post_id, emoji_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- bots ---


@router.post(
    "/bots",
    response_model=BotCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_bot(body: BotCreate, session: SessionDep, principal: Writer) -> BotCreated:
    """Create a bot you own. Its token (shown once) posts with `POST /api/messaging/hooks/bot/posts`;
    add the bot (`user_id`) to the channels it writes to."""
    bot, token = await service.create_bot(session, principal, body)
    return BotCreated(**_bot(bot).model_dump(), token=token)


@router.get("/bots", response_model=Page[BotRead])
async def list_bots(session: SessionDep, principal: Reader, params: PageDep) -> Page[BotRead]:
    query = scoped(Bot, principal.org_id)
    return (await paginate(session, query, (Bot.username, Bot.id), params)).page(_bot)


@router.get("/bots/{bot_id}", response_model=BotRead)
async def read_bot(bot_id: uuid.UUID, session: SessionDep, principal: Reader) -> BotRead:
    return _bot(await service.bots(session, principal.org_id).get(bot_id, Bot.id == bot_id))


@router.delete("/bots/{bot_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_bot(bot_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete a bot (its owner, or an org admin); its token stops working, its posts stay."""
    await service.delete_bot(session, principal, bot_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/bots/{bot_id}/token", response_model=BotCreated)
async def rotate_bot_token(bot_id: uuid.UUID, session: SessionDep, principal: Writer) -> BotCreated:
    """A new token for the bot (shown once); the old one stops working."""
    bot, token = await service.rotate_bot_token(session, principal, bot_id)
    return BotCreated(**_bot(bot).model_dump(), token=token)


# --- incoming webhooks ---


@router.post(
    "/hooks/incoming",
    response_model=HookCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({404}),
)
async def create_hook(
    body: HookCreate, session: SessionDep, principal: Writer, request: Request
) -> HookCreated:
    """An incoming webhook posting to a channel you are a member of. Its `url` (shown once) holds the
    secret: `POST` a Mattermost payload (`{"text": ...}`) to it, no token needed."""
    hook, key = await service.create_hook(session, principal, body)
    return HookCreated(**_hook(hook).model_dump(), url=service.HOOK_PATH + key)


@router.get("/hooks/incoming", response_model=Page[HookRead])
async def list_hooks(session: SessionDep, principal: Reader, params: PageDep) -> Page[HookRead]:
    query = scoped(IncomingHook, principal.org_id)
    return (await paginate(session, query, (IncomingHook.created_at, IncomingHook.id), params)).page(_hook)


@router.get("/hooks/incoming/{hook_id}", response_model=HookRead)
async def read_hook(hook_id: uuid.UUID, session: SessionDep, principal: Reader) -> HookRead:
    return _hook(await service.hooks(session, principal.org_id).get(hook_id, IncomingHook.id == hook_id))


@router.delete("/hooks/incoming/{hook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_hook(hook_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    """Delete a hook (its creator, or an org admin): its URL stops working."""
    await service.delete_hook(session, principal, hook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- credentials of their own: bot tokens and webhook URLs (public at the gateway, under /hooks/) ---

hooks_router = APIRouter(prefix="/hooks", tags=["messaging"], include_in_schema=False)


@hooks_router.post("/bot/posts", response_model=PostRead, status_code=status.HTTP_201_CREATED)
async def bot_post(body: BotPost, request: Request, session: SessionDep, cache: CacheDep) -> PostRead:
    """A bot posts with its own token (`Authorization: Bearer cdr_bot_…`) to a channel it is in."""
    bot = await service.bot_by_token(session, bearer_token(request))
    author = service.Author(bot.org_id, str(bot.id), {"from_bot": "true"})
    post = await service.create_post(
        session, cache, author, body.channel_id, body.message, body.root_id, body.props
    )
    return service.post_read(post)


@hooks_router.post("/{key}", response_class=PlainTextResponse)
async def incoming_webhook(
    key: Annotated[str, Path(min_length=20, max_length=100)],
    body: HookPayload,
    session: SessionDep,
    cache: CacheDep,
) -> PlainTextResponse:
    """Mattermost's incoming webhook: post `text` to the hook's channel as the hook's creator."""
    hook = await service.hook_by_key(session, key)
    props: dict[str, Any] = {"from_webhook": "true"}
    if body.username:
        props["override_username"] = body.username
    if body.icon_url:
        props["override_icon_url"] = body.icon_url
    author = service.Author(hook.org_id, hook.creator_id, props)
    await service.create_post(
        session, cache, author, hook.channel_id, body.text, None, body.props, must_join=False
    )
    return PlainTextResponse("ok")


# --- live events ---

CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_INVALID = 4401, 4403, 4422


def _sequence_number(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidField("query.sequence_number", "a non-negative integer: the last seq you received")
    return int(raw)


@router.websocket("/websocket")
async def websocket_events(websocket: WebSocket) -> None:
    """Live events of your channels, Mattermost's shape: `{"event", "data", "broadcast", "seq"}`.

    First a `hello` event (`data.sequence_number`: your stream's last seq). With
    `?sequence_number=<last seq you saw>` every event after it is sent first, in order, then live
    ones; without it, live ones only. Events: posted, post_edited, post_deleted, reaction_added,
    reaction_removed (numbered), typing (no seq, not replayed). Send
    `{"action": "user_typing", "seq": 1, "data": {"channel_id": ..., "parent_id": ...}}` to tell a
    channel you are typing; the answer is `{"status": "OK", "seq_reply": 1}`. Refusals close with
    4401, 4403 or 4422."""
    # A WebSocket route gets no Request, so the runtime is read from the app here.
    runtime: Runtime = websocket.app.state.runtime
    hub: live.Hub = websocket.app.state.messaging_hub
    settings = runtime.config(MessagingSettings)
    try:
        principal = await websocket_principal(websocket, "messaging:read")
        since = _sequence_number(websocket.query_params.get("sequence_number"))
    except Problem as problem:
        # Accepted first, so the client reads why in the close frame.
        await websocket.accept()
        code = {401: CLOSE_UNAUTHORIZED, 403: CLOSE_FORBIDDEN}.get(problem.status, CLOSE_INVALID)
        await websocket.close(code=code, reason=(problem.detail or problem.title)[:120])
        return
    await websocket.accept()
    subscriber = live.Subscriber(principal.org_id, principal.subject)
    # Subscribed before the stream is read: an event committed meanwhile is queued, and sent unless
    # the catch-up already did.
    await hub.join(subscriber)
    try:
        current = await live.last_seq(runtime.sessions, principal.org_id, principal.subject)
        await websocket.send_json(live.envelope("hello", {"sequence_number": current}, None, None))
        last = current if since is None else min(since, current)
        pump = asyncio.create_task(_send_events(websocket, runtime, subscriber, last, settings.check_seconds))
        listen = asyncio.create_task(_read_actions(websocket, runtime, principal, subscriber))
        try:
            await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, listen):
                task.cancel()
            await asyncio.gather(pump, listen, return_exceptions=True)
    except WebSocketDisconnect:
        return
    finally:
        hub.leave(subscriber)


async def _send_events(
    websocket: WebSocket, runtime: Runtime, subscriber: live.Subscriber, last: int, check_seconds: float
) -> None:
    async def catch_up(after: int) -> int:
        while True:
            events = await live.missed(
                runtime.sessions, subscriber.org_id, subscriber.user_id, after, live.CATCH_UP_BATCH
            )
            for event in events:
                await websocket.send_json(event)
                after = event["seq"]
            if len(events) < live.CATCH_UP_BATCH:
                return after

    last = await catch_up(last)
    while True:
        try:
            item = await asyncio.wait_for(subscriber.queue.get(), timeout=check_seconds)
        except TimeoutError:
            last = await catch_up(last)
            continue
        seq = item.get("seq")
        if seq is None:  # ephemeral (typing) or a reply to the client
            await websocket.send_json(item)
        elif seq == last + 1:
            await websocket.send_json(item)
            last = seq
        elif seq > last + 1:  # a note is late or lost: the stream has the events in between
            last = await catch_up(last)
        # seq <= last: already sent


async def _read_actions(
    websocket: WebSocket, runtime: Runtime, principal: Principal, subscriber: live.Subscriber
) -> None:
    while True:
        text = await websocket.receive_text()
        try:
            message = json.loads(text)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            subscriber.queue.put_nowait({"status": "FAIL", "seq_reply": None, "error": "not a JSON object"})
            continue
        reply_to = message.get("seq") if isinstance(message.get("seq"), int) else None
        try:
            await _act(runtime, principal, message)
        except Problem as problem:
            subscriber.queue.put_nowait(
                {"status": "FAIL", "seq_reply": reply_to, "error": problem.detail or problem.title}
            )
            continue
        subscriber.queue.put_nowait({"status": "OK", "seq_reply": reply_to})


async def _act(runtime: Runtime, principal: Principal, message: dict[str, Any]) -> None:
    if message.get("action") != "user_typing":
        raise InvalidField("action", "the one action is user_typing")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidField("data", "an object with channel_id")
    try:
        channel_id = uuid.UUID(str(data.get("channel_id")))
    except ValueError:
        raise InvalidField("data.channel_id", "a channel id") from None
    parent = data.get("parent_id")
    parent_id = parent if isinstance(parent, str) and len(parent) <= 64 else ""
    async with runtime.sessions() as session:
        await service.joined(session, principal.org_id, principal.subject, channel_id)
        members = await service.member_ids(session, principal.org_id, channel_id)
    others = [m for m in members if m != principal.subject]
    payload = {"channel_id": str(channel_id), "parent_id": parent_id, "user_id": principal.subject}
    await live.typing(runtime.cache, principal.org_id, others, payload)


# Flat (each route has its prefix already): an included router's routes are built again at inclusion.
routes = APIRouter(routes=[*router.routes, *hooks_router.routes])
