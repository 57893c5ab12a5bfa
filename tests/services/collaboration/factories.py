"""Builders for collaboration's tests: documents over REST, and Yjs clients (pycrdt Docs) speaking the
y-websocket protocol over real WebSockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pycrdt
from pycrdt import (
    Awareness,
    Doc,
    Provider,
    Text,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coder.tests.support.platform import Platform

API = "/api/collaboration/v1"


async def create_document(platform: Platform, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await platform.client.post(
        f"{API}/documents", json={"title": "Notes", **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


async def read_document(platform: Platform, headers: dict[str, str], document_id: str) -> dict[str, Any]:
    response = await platform.client.get(f"{API}/documents/{document_id}", headers=headers)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


class Channel:
    """pycrdt's `Channel` over a `websockets` client connection (for its `Provider`)."""

    def __init__(self, ws: ClientConnection, path: str) -> None:
        self.ws, self._path = ws, path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        await self.ws.send(message)

    async def recv(self) -> bytes:
        message = await self.ws.recv()
        assert isinstance(message, bytes)
        return message


@asynccontextmanager
async def provider(url: str, headers: dict[str, str]) -> AsyncIterator[tuple[Doc[Any], Text]]:
    """A Yjs client as pycrdt ships it (`Provider`): the Doc and its `content` text, synced."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    async with (
        connect(url, additional_headers=headers, max_size=None) as ws,
        Provider(doc, Channel(ws, url)) as p,
    ):
        await asyncio.wait_for(p.synced.wait(), timeout=30)
        yield doc, text


class Client:
    """A Yjs client driven step by step: each edit is sent as an update message, and `confirm()`
    sends sync step 1 and waits for the server's step 2, which the server sends only once every
    update sent before it is stored (the acknowledgement)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)
        self.awareness = Awareness(self.doc)
        self.denied: list[str] = []
        self.peers: dict[int, dict[str, Any]] = {}
        self._replies: set[asyncio.Task[None]] = set()

    async def insert(self, index: int | None, value: str) -> None:
        """Insert `value` at `index` (None: at the end) and send the update."""
        before = self.doc.get_state()
        self.text.insert(len(self.text) if index is None else index, value)
        await self.ws.send(create_update_message(self.doc.get_update(before)))

    async def confirm(self) -> None:
        await self.ws.send(create_sync_message(self.doc))
        await self.until(
            lambda message: message[:2] == bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2])
        )

    async def announce(self, state: dict[str, Any]) -> None:
        self.awareness.set_local_state(state)
        update = self.awareness.encode_awareness_update([self.doc.client_id])
        await self.ws.send(create_awareness_message(update))

    async def until(self, done: Callable[[bytes], bool], timeout: float = 30) -> None:
        """Handle messages until one satisfies `done` (it is handled too)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.ws.recv()
                assert isinstance(message, bytes)
                self.handle(message)
                if done(message):
                    return

    async def until_text(self, expected: str, timeout: float = 30) -> None:
        if str(self.text) != expected:
            await self.until(lambda _: str(self.text) == expected, timeout)

    def handle(self, message: bytes) -> None:
        if message[0] == YMessageType.SYNC:
            reply = handle_sync_message(message[1:], self.doc)
            if reply is not None:
                task = asyncio.ensure_future(self.ws.send(reply))
                self._replies.add(task)
                task.add_done_callback(self._replies.discard)
        elif message[0] == YMessageType.AWARENESS:
            self.awareness.apply_awareness_update(pycrdt.read_message(message[1:]), "server")
            self.peers = {k: v for k, v in self.awareness.states.items() if k != self.doc.client_id}
        elif message[0] == 2:  # y-protocols auth: permission denied
            decoder = pycrdt.Decoder(message[1:])
            decoder.read_var_uint()
            self.denied.append(decoder.read_var_string())


@asynccontextmanager
async def client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    """A connected `Client`, synced with the server (both ways) before it is handed out."""
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        c = Client(ws)
        await c.confirm()
        yield c
