"""Live documents: one room per open document on each replica, speaking the y-websocket protocol
(y-protocols' sync and awareness messages, encoded with pycrdt's own functions).

An update a client sends is checked, stored in the update log and committed before it is applied to
the room's document or sent to anyone, so every update a client has seen is durable. A connection's
messages are handled in order: the sync step 2 answering a step 1 is sent after every update the
client sent before it is stored, which is how a client knows its edits are safe. Replicas share
updates and awareness through Redis pub/sub; documents are CRDTs, so the order updates arrive in
does not matter and every replica converges.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket
from pycrdt import (
    Awareness,
    Decoder,
    Doc,
    Encoder,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
    read_message,
)
from starlette.websockets import WebSocketDisconnect, WebSocketState

from coder.services import collaboration as package
from coder.services.collaboration import service
from coder.services.collaboration.config import CollaborationSettings
from coder.services.collaboration.models import Document
from coder.services.collaboration.schemas import PresenceRead, Role
from coder.shared.db import transaction
from coder.shared.errors import Problem
from coder.shared.runtime import Runtime

log = logging.getLogger(package.__name__)

CHANNEL = "collaboration:sync:"
# y-protocols: messageQueryAwareness = 3, messageAuth = 2 with messagePermissionDenied = 0.
QUERY_AWARENESS = 3
AUTH, PERMISSION_DENIED = 2, 0
CLOSE_TOO_SLOW, CLOSE_INVALID, CLOSE_GONE = 1013, 1007, 4404


def permission_denied(reason: str) -> bytes:
    encoder = Encoder()
    encoder.write_var_uint(PERMISSION_DENIED)
    encoder.write_var_string(reason)
    return bytes([AUTH]) + encoder.to_bytes()


@dataclass(eq=False)
class Connection:
    """One client: its identity and role, the awareness client ids it announced, and its outgoing
    queue (a slow client must not stall the others: past the limit it is disconnected and resyncs
    when it reconnects)."""

    websocket: WebSocket
    subject: str
    role: Role
    limit: int
    clients: set[int] = field(default_factory=set)
    outgoing: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    too_slow: bool = False

    def send(self, message: bytes) -> None:
        if self.too_slow:
            return
        if self.outgoing.qsize() >= self.limit:
            self.too_slow = True
            self.outgoing.put_nowait(None)
            return
        self.outgoing.put_nowait(message)

    async def pump(self) -> None:
        while (message := await self.outgoing.get()) is not None:
            await self.websocket.send_bytes(message)
        if self.too_slow and self.websocket.client_state is WebSocketState.CONNECTED:
            await self.websocket.close(code=CLOSE_TOO_SLOW, reason="too slow; reconnect to resync")


class Room:
    """One open document on this replica."""

    def __init__(self, rooms: Rooms, document_id: uuid.UUID, org_id: str, title: str, owner: str) -> None:
        self.rooms = rooms
        self.document_id, self.org_id, self.title, self.owner = document_id, org_id, title, owner
        self.doc: Doc[Any] = Doc()
        self.awareness = Awareness(self.doc)
        self.awareness.set_local_state(None)  # the server itself is nobody's presence
        self.connections: set[Connection] = set()
        # Awareness client id -> the user it belongs to, and its connection when that is here.
        self.owners: dict[int, tuple[str, Connection | None]] = {}
        self.ready = asyncio.Event()
        self.pending = 0  # updates stored here since this replica last compacted
        self.compacting: asyncio.Task[None] | None = None

    # --- messages from a client ---

    async def handle(self, conn: Connection, message: bytes) -> None:
        if not message:
            return
        if message[0] == YMessageType.SYNC and len(message) > 1:
            kind = message[1]
            if kind == YSyncMessageType.SYNC_STEP1:
                reply = handle_sync_message(message[1:], self.doc)
                if reply is not None:
                    conn.send(reply)
            elif kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                update = read_message(message[2:])
                if update == service.EMPTY_UPDATE:
                    return
                if conn.role is Role.VIEWER:
                    conn.send(permission_denied("viewers may not edit this document"))
                    return
                await self.store(conn, update)
        elif message[0] == YMessageType.AWARENESS:
            self.awareness_from(conn, read_message(message[1:]))
        elif message[0] == QUERY_AWARENESS:
            self.send_awareness(conn)

    async def store(self, conn: Connection, update: bytes) -> None:
        settings = self.rooms.settings
        if len(update) > settings.max_update_bytes:
            raise Problem(f"an update may hold at most {settings.max_update_bytes} bytes", status=413)
        service.check_update(update)
        async with transaction(self.rooms.runtime.sessions) as session:
            await service.append(session, self.document_id, self.org_id, conn.subject, update)
        self.apply(update, origin=conn)
        await self.rooms.tell_replicas(self, "update", update)
        self.pending += 1
        if self.pending >= settings.snapshot_every and self.compacting is None:
            self.compacting = asyncio.create_task(self.compact(conn.subject))

    def apply(self, update: bytes, origin: Connection | None) -> None:
        self.doc.apply_update(update)
        message = create_update_message(update)
        for other in self.connections:
            if other is not origin:
                other.send(message)

    def awareness_from(self, conn: Connection, update: bytes) -> None:
        """Apply a client's awareness update, keeping only the entries of client ids it owns (the
        first connection to announce an id owns it): no client can move or remove another's."""
        entries = _awareness_entries(update)
        mine = [e for e in entries if self.owners.get(e[0], (None, conn))[1] is conn]
        if not mine:
            return
        for client_id, _, state in mine:
            if state == "null":
                self.owners.pop(client_id, None)
                conn.clients.discard(client_id)
            else:
                self.owners[client_id] = (conn.subject, conn)
                conn.clients.add(client_id)
        kept = _encode_awareness(mine)
        self.awareness.apply_awareness_update(kept, conn)
        self.broadcast_awareness(kept, origin=conn)
        self.rooms.tell_replicas_soon(self, "awareness", kept, conn.subject)

    def broadcast_awareness(self, update: bytes, origin: Connection | None) -> None:
        message = create_awareness_message(update)
        for other in self.connections:
            if other is not origin:
                other.send(message)

    def send_awareness(self, conn: Connection) -> None:
        states = list(self.awareness.states)
        if states:
            conn.send(create_awareness_message(self.awareness.encode_awareness_update(states)))

    def forget(self, conn: Connection) -> None:
        """The connection left: its presence is removed here and on every replica."""
        gone = [c for c in conn.clients if c in self.awareness.states]
        for client_id in conn.clients:
            self.owners.pop(client_id, None)
        if gone:
            self.awareness.remove_awareness_states(gone, "left")
            update = self.awareness.encode_awareness_update(gone)
            self.broadcast_awareness(update, origin=conn)
            self.rooms.tell_replicas_soon(self, "awareness", update, conn.subject)

    # --- from other replicas ---

    def remote(self, kind: str, data: bytes, subject: str | None) -> None:
        if kind == "update":
            self.apply(data, origin=None)
        elif kind == "awareness":
            entries = _awareness_entries(data)
            for client_id, _, state in entries:
                if state == "null":
                    self.owners.pop(client_id, None)
                elif client_id not in self.owners and subject is not None:
                    self.owners[client_id] = (subject, None)
            self.awareness.apply_awareness_update(data, "remote")
            self.broadcast_awareness(data, origin=None)

    def presence(self) -> list[PresenceRead]:
        return [
            PresenceRead(client_id=client_id, user=self.owners.get(client_id, (None, None))[0], state=state)
            for client_id, state in sorted(self.awareness.states.items())
        ]

    async def compact(self, actor: str) -> None:
        try:
            pending = self.pending
            async with transaction(self.rooms.runtime.sessions) as session:
                document = await session.get(Document, self.document_id)
                if document is not None:
                    await service.compact(session, document, actor)
            self.pending -= pending
        except Exception:
            log.exception("compaction failed", extra={"document_id": str(self.document_id)})
        finally:
            self.compacting = None


class Rooms:
    """The rooms open on this replica and the Redis channel joining them to the other replicas."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.replica = uuid.uuid4().hex
        self.rooms: dict[uuid.UUID, Room] = {}
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def settings(self) -> CollaborationSettings:
        return self.runtime.config(CollaborationSettings)

    def connection(self, websocket: WebSocket, subject: str, role: Role) -> Connection:
        return Connection(websocket, subject, role, self.settings.max_queued_messages)

    async def join(self, document: Document, conn: Connection) -> Room:
        await self._listen()
        async with self._lock:
            room = self.rooms.get(document.id)
            if room is None:
                # Registered before it is loaded: updates from other replicas that arrive meanwhile
                # are applied to it, and the stored state merges with them in any order.
                room = self.rooms[document.id] = Room(
                    self, document.id, document.org_id, document.title, document.owner
                )
                try:
                    async with transaction(self.runtime.sessions) as session:
                        content = await service.load(session, document.id)
                    room.doc.apply_update(content.doc.get_update())
                    room.pending = len(content.pending)
                except BaseException:
                    del self.rooms[document.id]
                    raise
                room.ready.set()
            room.connections.add(conn)
        return room

    async def leave(self, room: Room, conn: Connection) -> None:
        async with self._lock:
            room.connections.discard(conn)
            room.forget(conn)
            if room.connections:
                return
            del self.rooms[room.document_id]
        # The last client left: fold its updates into a snapshot, so the next load starts there.
        if room.pending and room.compacting is None:
            self._spawn(room.compact(room.owner))

    def presence(self, document_id: uuid.UUID) -> list[PresenceRead]:
        room = self.rooms.get(document_id)
        return room.presence() if room is not None else []

    def close_document(self, document_id: uuid.UUID) -> None:
        """The document was deleted: its clients are disconnected."""
        room = self.rooms.get(document_id)
        if room is not None:
            for conn in list(room.connections):
                self._spawn(conn.websocket.close(code=CLOSE_GONE, reason="the document was deleted"))

    # --- replicas ---

    async def tell_replicas(self, room: Room, kind: str, data: bytes, subject: str | None = None) -> None:
        cache = self.runtime.cache
        if cache is None:
            return
        payload = json.dumps(
            {"replica": self.replica, "kind": kind, "data": base64.b64encode(data).decode(), "user": subject}
        )
        try:
            await cache.publish(CHANNEL + str(room.document_id), payload)
        except Exception as exc:  # stored already: other replicas read it when they next load
            log.warning("could not tell the other replicas", extra={"error": repr(exc)})

    def tell_replicas_soon(self, room: Room, kind: str, data: bytes, subject: str | None) -> None:
        self._spawn(self.tell_replicas(room, kind, data, subject))

    async def _listen(self) -> None:
        if self._subscribed is None:
            self._subscribed = asyncio.Event()
            self._listener = asyncio.create_task(self._run_listener(self._subscribed))
        await self._subscribed.wait()

    async def _run_listener(self, subscribed: asyncio.Event) -> None:
        cache = self.runtime.cache
        if cache is None:
            subscribed.set()
            return
        while True:
            try:
                async with cache.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(CHANNEL + "*")
                    subscribed.set()
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None:
                            self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                subscribed.set()  # serve on alone; other replicas' edits arrive with the next load
                log.warning("replica channel lost; reconnecting", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message.get("channel", "")
        try:
            body = json.loads(message["data"])
            document_id = uuid.UUID(str(channel).removeprefix(CHANNEL))
        except (ValueError, KeyError, TypeError):
            return
        if body.get("replica") == self.replica:
            return
        room = self.rooms.get(document_id)
        if room is not None:
            room.remote(body.get("kind", ""), base64.b64decode(body.get("data", "")), body.get("user"))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _awareness_entries(update: bytes) -> list[tuple[int, int, str]]:
    """(client id, clock, state JSON) of each entry of an awareness update."""
    decoder = Decoder(update)
    entries = []
    for _ in range(decoder.read_var_uint()):
        client_id = decoder.read_var_uint()
        clock = decoder.read_var_uint()
        entries.append((client_id, clock, decoder.read_var_string()))
    return entries


def _encode_awareness(entries: list[tuple[int, int, str]]) -> bytes:
    encoder = Encoder()
    encoder.write_var_uint(len(entries))
    for client_id, clock, state in entries:
        encoder.write_var_uint(client_id)
        encoder.write_var_uint(clock)
        encoder.write_var_string(state)
    return encoder.to_bytes()


async def serve(rooms: Rooms, websocket: WebSocket, document: Document, subject: str, role: Role) -> None:
    """One client's session, from its accepted WebSocket to its departure."""
    conn = rooms.connection(websocket, subject, role)
    room = await rooms.join(document, conn)
    writer = asyncio.create_task(conn.pump())
    try:
        # y-websocket's opening: the server's state vector (the client answers with what the server
        # lacks, and asks with its own), then who is here.
        conn.send(create_sync_message(room.doc))
        room.send_awareness(conn)
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                return
            message = received.get("bytes")
            if message is None:
                continue  # the protocol is binary; text frames mean nothing
            await room.handle(conn, message)
    except WebSocketDisconnect:
        return
    except (Problem, ValueError, RuntimeError, IndexError) as exc:
        # A message that is not the protocol, or an update that does not decode: nothing of it was
        # stored. The client is told why and disconnected.
        reason = exc.detail if isinstance(exc, Problem) and exc.detail else str(exc)
        with contextlib.suppress(Exception):
            await websocket.close(code=CLOSE_INVALID, reason=reason[:120])
    finally:
        await rooms.leave(room, conn)
        conn.outgoing.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, timeout=1.0)
        writer.cancel()
