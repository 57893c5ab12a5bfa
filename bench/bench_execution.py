"""execution's sandbox: start-to-exit latency of `true`, and runs per second, against a bare subprocess,
in the same run:

- the baseline: `true` as a bare asyncio subprocess (fork, exec, wait);
- the rlimits sandbox: a uid of the job's own from the pool (a lock file), a fresh working directory,
  rlimits and a network namespace set in the child, a new session, output pipes read to the end, and
  the sweep that kills whatever the uid left;
- bubblewrap: the same plus user, pid, mount, ipc, uts and network namespaces and a read-only view of
  the system directories (skipped where the kernel refuses unprivileged namespaces).

Latency is p50 and p95 of sequential runs; runs per second are with 4 jobs at once.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from coder.bench.support import Stopwatch, percentile, report, result
from coder.services.execution.sandbox import (
    BUBBLEWRAP,
    RLIMITS,
    Limits,
    LocalSandbox,
    RunSpec,
    Sink,
    UidPool,
    probe_bubblewrap,
)

Run = Callable[[], Awaitable[None]]
SAMPLES = 60
WARMUP = 5
CONCURRENT = 4
THROUGHPUT_RUNS = 80
UID_BASE = 65000
LIMITS = Limits(
    cpu_seconds=5,
    wall_seconds=30,
    memory_bytes=256 << 20,
    processes=32,
    output_bytes=65536,
    file_bytes=1 << 20,
)


class Discard(Sink):
    async def output(self, stream: str, data: bytes) -> None:
        pass


async def bare() -> None:
    proc = await asyncio.create_subprocess_exec(
        "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await proc.communicate()
    assert proc.returncode == 0


def sandboxed(sandbox: LocalSandbox) -> Run:
    async def one() -> None:
        spec = RunSpec(job_id=uuid.uuid4().hex, argv=["true"], limits=LIMITS)
        result = await sandbox.run(spec, Discard())
        assert result.outcome == "exited" and result.exit_code == 0, result

    return one


async def latency(run: Run) -> list[float]:
    samples = []
    for n in range(SAMPLES + WARMUP):
        clock = Stopwatch()
        await run()
        if n >= WARMUP:
            samples.append(clock.seconds)
    return samples


async def throughput(run: Run) -> float:
    queue = list(range(THROUGHPUT_RUNS))

    async def lane() -> None:
        while queue:
            queue.pop()
            await run()

    clock = Stopwatch()
    await asyncio.gather(*(lane() for _ in range(CONCURRENT)))
    return THROUGHPUT_RUNS / clock.seconds


async def main() -> None:
    root = Path(tempfile.gettempdir()) / f"coder-execution-bench-{uuid.uuid4().hex[:8]}"
    pool = UidPool(UID_BASE, 16, root / "uids")
    ways = {
        "bare subprocess (baseline)": bare,
        "rlimits sandbox": sandboxed(LocalSandbox(RLIMITS, root, pool)),
    }
    uid = pool.take()
    assert uid is not None
    usable = probe_bubblewrap(uid)
    pool.give_back(uid)
    if usable is None:
        ways["bubblewrap sandbox"] = sandboxed(LocalSandbox(BUBBLEWRAP, root, pool))
    else:
        print(f"bubblewrap skipped: {usable}")
    try:
        latencies = {name: await latency(run) for name, run in ways.items()}
        rates = {name: await throughput(run) for name, run in ways.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    baseline = "bare subprocess (baseline)"
    report(
        f"start-to-exit latency of `true`, p50 of {SAMPLES} (lower is better)",
        [(name, percentile(s, 50) * 1000, "ms") for name, s in latencies.items()],
        baseline=baseline,
    )
    report(
        f"start-to-exit latency of `true`, p95 of {SAMPLES} (lower is better)",
        [(name, percentile(s, 95) * 1000, "ms") for name, s in latencies.items()],
        baseline=baseline,
    )
    report(
        f"runs of `true` per second, {CONCURRENT} at once (higher is better)",
        [(name, rate, "runs/s") for name, rate in rates.items()],
        baseline=baseline,
    )
    for name, rate in rates.items():
        if name != baseline:
            result(f"{name.split()[0]}_runs_vs_bare", rate / rates[baseline])
