"""The platform's own weight: `run --target all` until /readyz answers 200, and the CLI's listings.

Side by side: `coder-platform run --target all` on embedded defaults (embedded PostgreSQL, in-process
cache and bus, compiled and migrated beforehand, as after `make run` once) against a bare uvicorn
serving one FastAPI route from a module that imports nothing else (bare_fastapi.py);
`coder-platform --help` and `targets` against a bare interpreter. Ready time is wall clock to the
first 200 from /readyz; memory is the serving process's resident set at that moment (no model
weights yet: the embeddings model loads on first use). The CPU seconds the process spent until
ready, and each command's, are printed too: on a loaded machine they say more than the wall clock.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from coder.bench.support import Stopwatch, process, ready, report, result
from coder.shared.devservers import free_port

RUNS = 3  # each figure is the median of this many starts
CLI_RUNS = 5
READY_GOAL_S = 5.0
RSS_GOAL_MB = 350.0
CLI_GOAL_S = 0.5
ROOT = Path(__file__).resolve().parents[1]  # the project's own sources (.pkg/coder links to it)


def _status(pid: int) -> tuple[float, float]:
    """(resident MB, CPU seconds) of a running process, from /proc."""
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


async def _start(argv: list[str], env: dict[str, str], log: Path, port: int) -> tuple[float, float, float]:
    """(seconds to the first 200 from /readyz, resident MB, CPU seconds then) of one start."""
    clock = Stopwatch()
    with process(argv, env, log) as started:
        await ready(f"http://127.0.0.1:{port}/readyz", started, log)
        seconds = clock.seconds
        rss, cpu = _status(started.pid)
    return seconds, rss, cpu


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-2000:]}")


def _cli(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of a command that must succeed."""
    times, cpus = [], []
    for _ in range(CLI_RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        clock = Stopwatch()
        _run(argv, env)
        times.append(clock.seconds)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


async def main() -> None:
    python = sys.executable
    cli = str(Path(python).with_name("coder-platform"))
    work = Path(tempfile.mkdtemp(prefix="coder-bench-platform-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODER_")}
    env = {k: v for k, v in env.items() if k not in {"DATABASE_URL", "REDIS_URL", "AMQP_URL"}}
    env |= {"CODER_DATA_DIR": str(work / "data"), "CODER_LOG_LEVEL": "WARNING"}
    try:
        # A warm virtualenv, as `make install` and `make run` leave it: the dependencies and the
        # project compiled once (quick when they are). With PYTHONDONTWRITEBYTECODE set, a virtualenv
        # older than the Makefile's compile step (main's at 6.3 s CPU until ready: 3.6 s warm)
        # compiles thousands of modules at every start, and the figure measures the compiler.
        compile_all = [python, "-m", "compileall", "-q", "-j", "0", "-x", r"/\.(venv|pkg)/"]
        await asyncio.to_thread(_run, [*compile_all, sysconfig.get_path("purelib"), str(ROOT)], env)
        await asyncio.to_thread(_run, [cli, "migrate"], env)
        starts: dict[str, list[tuple[float, float, float]]] = {
            "bare uvicorn + FastAPI": [],
            "run --target all": [],
        }
        for i in range(RUNS):  # alternated, so a busier moment of the machine weighs on both
            port = free_port()
            argv = [python, "-P", "-m", "uvicorn", "coder.bench.bare_fastapi:app"]
            argv += ["--port", str(port), "--log-level", "warning"]
            starts["bare uvicorn + FastAPI"].append(await _start(argv, env, work / f"bare-{i}.log", port))
            port = free_port()
            argv = [cli, "run", "--target", "all", "--port", str(port)]
            starts["run --target all"].append(await _start(argv, env, work / f"all-{i}.log", port))
        cli_times = {
            name: await asyncio.to_thread(_cli, argv, env)
            for name, argv in {
                "bare interpreter": [python, "-P", "-c", "pass"],
                "coder-platform --help": [cli, "--help"],
                "coder-platform targets": [cli, "targets"],
            }.items()
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {
        name: [statistics.median(s[i] for s in runs) for i in range(3)] for name, runs in starts.items()
    }
    print(f"start until /readyz answers 200 (median of {RUNS}, alternated)")
    report("  ready", [(n, m[0], "s") for n, m in median.items()], baseline="bare uvicorn + FastAPI")
    report(
        "  resident memory at ready",
        [(n, m[1], "MB") for n, m in median.items()],
        baseline="bare uvicorn + FastAPI",
    )
    report(
        "  CPU time until ready",
        [(n, m[2], "s") for n, m in median.items()],
        baseline="bare uvicorn + FastAPI",
    )
    print(f"command line (median of {CLI_RUNS}, ms)")
    report("  wall", [(n, t * 1000, "ms") for n, (t, _) in cli_times.items()], baseline="bare interpreter")
    report("  CPU", [(n, c * 1000, "ms") for n, (_, c) in cli_times.items()], baseline="bare interpreter")
    ready_s, rss_mb, cpu_s = median["run --target all"]
    result("all_ready_s", ready_s, goal=READY_GOAL_S, higher_is_better=False, unit="s")
    result("all_rss_mb", rss_mb, goal=RSS_GOAL_MB, higher_is_better=False, unit="MB")
    result("all_cpu_s", cpu_s, unit="s")
    for name, command in (("help", "coder-platform --help"), ("targets", "coder-platform targets")):
        wall, cpu = cli_times[command]
        result(f"{name}_s", wall, goal=CLI_GOAL_S, higher_is_better=False, unit="s")
        result(f"{name}_cpu_s", cpu, unit="s")
