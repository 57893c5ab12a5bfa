"""Sign-up's costly part, the password hash: never for a refused sign-up, never under the bootstrap
lock or inside a transaction, always in the bounded argon2 pool."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text

from coder.gateway import sessions
from coder.tests.gateway.conftest import Gateway
from coder.tests.gateway.factories import PASSWORD, unique_email
from coder.tests.gateway.test_identity import tweaked
from coder.tests.support.platform import wait_until

BOOTSTRAP_LOCKS = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
    "WHERE l.locktype = 'advisory' AND l.objid = :id AND d.datname = current_database()"
)


class GatedHasher(PasswordHasher):
    """The real hasher, counting its calls, noting its threads, and holding each hash until released."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30), "the test never released the hash"
        return super().hash(password, salt=salt)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedHasher]:
    gated = GatedHasher()
    monkeypatch.setattr(sessions, "_hasher", gated)
    yield gated
    gated.release.set()


async def test_refused_signup_never_hashes_and_answers_alike(gw: Gateway, hasher: GatedHasher) -> None:
    with tweaked(gw, open_signup=False):
        registered = await gw.client.post(
            "/auth/signup", json={"email": gw.founder.email, "password": PASSWORD, "name": "A"}
        )
        unknown = await gw.client.post(
            "/auth/signup", json={"email": unique_email(), "password": PASSWORD, "name": "A"}
        )
    assert registered.status_code == unknown.status_code == 403, registered.text
    assert registered.json() == unknown.json()
    assert registered.json()["type"].endswith("/signup-closed")
    assert hasher.calls == 0


async def test_signup_hashes_before_the_lock_in_the_argon2_pool(gw: Gateway, hasher: GatedHasher) -> None:
    hasher.release.clear()
    email = unique_email()
    signup = asyncio.create_task(
        gw.client.post("/auth/signup", json={"email": email, "password": PASSWORD, "name": "Hashed"})
    )
    try:
        await wait_until(hasher.entered.is_set, what="the password hash to start")
        engine = gw.platform.runtime.engine
        assert engine is not None
        async with engine.connect() as conn:
            held = await conn.scalar(BOOTSTRAP_LOCKS, {"id": sessions._BOOTSTRAP_LOCK})
        assert held == 0, "the bootstrap lock is held while the password is hashed"
    finally:
        hasher.release.set()
    response = await signup
    assert response.status_code == 201, response.text
    assert hasher.calls == 1
    assert hasher.threads[0].startswith("argon2"), hasher.threads
