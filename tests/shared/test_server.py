"""How `run` serves: the writes of one turn of the event loop leave as one."""

from __future__ import annotations

import asyncio
from typing import Any

from coder.shared.server import _CorkedTransport


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def test_writes_of_one_turn_leave_as_one() -> None:
    raw = Recording()
    corked = _CorkedTransport(raw)
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(b"body")
    assert raw.writes == []
    await asyncio.sleep(0)  # the turn ends
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    # Past the limit the transport gets it at once (its flow control then applies as usual).
    corked.write(b"x" * (_CorkedTransport.LIMIT + 1))
    assert len(raw.writes) == 2
    # Closing sends what is held first; the rest is the transport's own.
    corked.write(b"last")
    corked.close()
    assert raw.writes[-1] == b"last" and raw.closed
    await asyncio.sleep(0)
    assert len(raw.writes) == 3 and corked.get_extra_info("peername") == ("127.0.0.1", 1)
