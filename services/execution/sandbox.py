"""Running one job on this machine: bubblewrap where the kernel allows unprivileged namespaces, else
rlimits and a separate user. Either way the program runs as a uid of its own (never root: the kernel
does not enforce RLIMIT_NPROC for root), in a session of its own, with CPU, address-space, process
and file-size rlimits, and everything left of it is killed when it ends.

The uid is one of a pool, taken with a lock file for as long as the job runs, so that two jobs never
share one: RLIMIT_NPROC counts a uid's processes, and the last sweep kills every process of the uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

log = logging.getLogger(__name__)

BUBBLEWRAP = "bubblewrap"
RLIMITS = "rlimits"
KUBERNETES = "kubernetes"

# Ends of a run, as the job record says them (TASKS.md fixes the names).
EXITED = "exited"
CPU_TIME = "cpu_time"
WALL_TIME = "wall_time"
MEMORY = "memory"
PROCESSES = "processes"
OUTPUT = "output"
CANCELLED = "cancelled"
ERROR = "error"

# What a program prints when an allocation is refused under RLIMIT_AS (Python, libc, C++, the JVM, Go).
_OUT_OF_MEMORY = (
    b"MemoryError",
    b"Cannot allocate memory",
    b"std::bad_alloc",
    b"out of memory",
    b"OutOfMemoryError",
)
# What a shell or runtime prints when RLIMIT_NPROC refuses a fork or a thread: the job is stopped at
# once (a fork bomb would otherwise spin at the limit until its wall time).
_FORK_REFUSED = (
    b"Cannot fork",
    b"fork: ",
    b"Resource temporarily unavailable",
    b"can't start new thread",
)
_CLONE_NEWNET = 0x40000000
_READ_SIZE = 65536
# Read-only system directories a program needs; the rest of the host is not there.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/alternatives")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime")
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/ssl", "/etc/ca-certificates")
SANDBOX_HOME = "/work"


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    wall_seconds: int
    memory_bytes: int
    processes: int
    output_bytes: int
    file_bytes: int


@dataclass(frozen=True)
class RunSpec:
    """What to run: argv, in a working directory holding `files`, with these limits."""

    job_id: str
    argv: list[str]
    limits: Limits
    network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    outputs: tuple[str, ...] = ()
    # The most bytes one declared output file may bring back.
    output_file_bytes: int = 1 << 20


@dataclass
class RunResult:
    outcome: str
    reason: str
    exit_code: int | None = None
    signal: int | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class Sink:
    """Where a run's output goes while it runs, and how it learns it was cancelled."""

    async def output(self, stream: str, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def tick(self) -> bool:
        """Called about every `tick_seconds` while the job runs; True if the job was cancelled."""
        return False


def probe_bubblewrap(uid: int) -> str | None:
    """None if bubblewrap runs a sandbox with every namespace unshared as `uid`, else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed"
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argv
            [bwrap, "--unshare-all", "--die-with-parent", *_root_binds(False), "--", "true"],
            user=uid,
            group=uid,
            extra_groups=[],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap failed: {exc}"
    if done.returncode != 0:
        return f"bwrap answered {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]}"
    return None


def _root_binds(network: bool) -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS + _SYSTEM_FILES + (_NETWORK_FILES if network else ()):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


class UidPool:
    """Uids `base`..`base+size-1`, each held by one job at a time across every process on the host (a
    lock file per uid: a crashed process's locks go with it)."""

    def __init__(self, base: int, size: int, lock_dir: Path) -> None:
        self.base, self.size, self.lock_dir = base, size, lock_dir
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._held: dict[int, IO[bytes]] = {}

    def take(self) -> int | None:
        for uid in range(self.base, self.base + self.size):
            if uid in self._held:
                continue
            handle = open(self.lock_dir / f"{uid}.lock", "ab")  # noqa: SIM115 - held until given back
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._held[uid] = handle
            return uid
        return None

    def give_back(self, uid: int) -> None:
        handle = self._held.pop(uid, None)
        if handle is not None:
            handle.close()


def processes_of(uid: int) -> list[int]:
    """Pids of every live process of `uid` (a zombie is dead already: only its parent's wait is left)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            pids.append(int(entry.name))
    return pids


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left (a fork bomb races the sweep)."""
    for _ in range(50):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def safe_path(name: str) -> PurePosixPath:
    """A relative path inside the working directory, or ValueError saying why not."""
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(part in ("..", ".", "") for part in path.parts):
        raise ValueError("must be a relative path without `.` or `..`")
    return path


class LocalSandbox:
    """Runs jobs as uids of a pool, in bubblewrap or under rlimits alone (`kind`)."""

    def __init__(self, kind: str, root: Path, pool: UidPool, tick_seconds: float = 0.25) -> None:
        self.kind = kind
        self.root = root
        self.pool = pool
        self.tick_seconds = tick_seconds
        self.jobs_dir = root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        # Others may pass through (a job's uid reaches its own directory) but not list it.
        os.chmod(root, 0o711)  # noqa: S103 - traversable, not listable
        os.chmod(self.jobs_dir, 0o711)  # noqa: S103

    @classmethod
    def choose(cls, wanted: str, root: Path, pool: UidPool, tick_seconds: float = 0.25) -> LocalSandbox:
        """`wanted` is "auto", "bubblewrap" or "rlimits"; auto probes bubblewrap with a uid of the pool."""
        if os.geteuid() != 0:
            raise RuntimeError(
                "the local sandboxes run each job as a uid of its own, which needs root "
                "(or set EXECUTION_BACKEND=kubernetes)"
            )
        if wanted == RLIMITS:
            return cls(RLIMITS, root, pool, tick_seconds)
        uid = pool.take()
        if uid is None:
            raise RuntimeError("every sandbox uid is in use")
        try:
            why = probe_bubblewrap(uid)
        finally:
            pool.give_back(uid)
        if why is None:
            return cls(BUBBLEWRAP, root, pool, tick_seconds)
        if wanted == BUBBLEWRAP:
            raise RuntimeError(f"bubblewrap was asked for but does not work here: {why}")
        log.warning("bubblewrap does not work here; jobs run under rlimits", extra={"why": why})
        return cls(RLIMITS, root, pool, tick_seconds)

    async def run(self, spec: RunSpec, sink: Sink) -> RunResult:
        uid = self.pool.take()
        if uid is None:
            return RunResult(ERROR, "every sandbox uid is in use")
        workdir = self.jobs_dir / spec.job_id
        try:
            self._prepare(workdir, uid, spec)
            # It sweeps the uid itself when the program ends.
            return await self._run(spec, sink, uid, workdir)
        except OSError as exc:
            await asyncio.to_thread(kill_uid, uid)
            return RunResult(ERROR, f"the sandbox could not start: {exc}")
        except BaseException:
            # Cancelled (the process stops) or a bug: nothing of the job may outlive it.
            await asyncio.to_thread(kill_uid, uid)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self.pool.give_back(uid)

    def _prepare(self, workdir: Path, uid: int, spec: RunSpec) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(mode=0o700)
        for name, data in spec.files.items():
            path = workdir / safe_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for dirpath, dirnames, filenames in os.walk(workdir):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, uid, uid)

    def _argv(self, spec: RunSpec, workdir: Path) -> list[str]:
        if self.kind == RLIMITS:
            return list(spec.argv)
        bwrap = shutil.which("bwrap") or "bwrap"
        return [
            bwrap,
            "--unshare-all",
            *(["--share-net"] if spec.network else []),
            "--die-with-parent",
            "--new-session",
            *_root_binds(spec.network),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",  # noqa: S108 - the sandbox's own, empty
            "--bind",
            str(workdir),
            SANDBOX_HOME,
            "--chdir",
            SANDBOX_HOME,
            "--hostname",
            "sandbox",
            "--",
            *spec.argv,
        ]

    def _env(self, spec: RunSpec, workdir: Path) -> dict[str, str]:
        home = SANDBOX_HOME if self.kind == BUBBLEWRAP else str(workdir)
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": "/tmp" if self.kind == BUBBLEWRAP else home,  # noqa: S108 - the sandbox's own
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **spec.env,
        }

    def _preexec(self, spec: RunSpec, uid: int) -> Callable[[], None]:
        limits = spec.limits
        isolate_network = self.kind == RLIMITS and not spec.network

        def limit() -> None:
            # Runs in the child before exec, still as root: the network namespace needs it.
            if isolate_network:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.unshare(_CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "no network namespace for a job without network")
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            # bubblewrap's own two processes count against the uid too.
            extra = 2 if self.kind == BUBBLEWRAP else 0
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes + extra, limits.processes + extra))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
            # Last, as the rest needs root: the job's own uid, no supplementary groups.
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

        return limit

    async def _run(self, spec: RunSpec, sink: Sink, uid: int, workdir: Path) -> RunResult:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self._argv(spec, workdir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env=self._env(spec, workdir),
            start_new_session=True,
            preexec_fn=self._preexec(spec, uid),
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        stopped: list[tuple[str, str]] = []
        total = [0]
        tail = bytearray()

        def stop(outcome: str, reason: str) -> None:
            if not stopped:
                stopped.append((outcome, reason))
            # Not proc.kill(): it polls, reaping the child under asyncio's watcher, which then
            # reports 255 instead of how it ended.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        async def pump(stream: asyncio.StreamReader, name: str) -> None:
            while chunk := await stream.read(_READ_SIZE):
                room = spec.limits.output_bytes - total[0]
                total[0] += len(chunk)
                if name == "stderr":
                    tail.extend(chunk[-4096:])
                    del tail[:-4096]
                    if any(marker in chunk for marker in _FORK_REFUSED):
                        stop(PROCESSES, f"reached the limit of {spec.limits.processes} processes")
                if room > 0:
                    await sink.output(name, chunk[:room])
                if total[0] > spec.limits.output_bytes:
                    # Read on to the end, discarding: asyncio reports the exit only once every
                    # pipe is closed, and a paused pipe never sees its end.
                    stop(OUTPUT, f"the output passed {spec.limits.output_bytes} bytes")

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if spec.stdin:
                    proc.stdin.write(spec.stdin)  # type: ignore[union-attr]
                    await proc.stdin.drain()  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]

        pumps = [
            asyncio.create_task(pump(proc.stdout, "stdout")),
            asyncio.create_task(pump(proc.stderr, "stderr")),
            asyncio.create_task(feed()),
        ]
        waited = asyncio.create_task(proc.wait())
        nproc_limit = spec.limits.processes
        while not waited.done():
            await asyncio.wait({waited}, timeout=self.tick_seconds)
            if waited.done():
                break
            if time.monotonic() - started > spec.limits.wall_seconds:
                stop(WALL_TIME, f"still running after {spec.limits.wall_seconds} s of wall time")
            elif len(await asyncio.to_thread(processes_of, uid)) >= nproc_limit:
                stop(PROCESSES, f"reached the limit of {nproc_limit} processes")
            elif await sink.tick():
                stop(CANCELLED, "cancelled")
        # What it left behind (a daemon, a bomb's last forks) goes before its output is drained.
        await asyncio.to_thread(kill_uid, uid)
        try:
            await asyncio.wait_for(asyncio.gather(*pumps), timeout=5)
        except TimeoutError:
            for task in pumps:
                task.cancel()
        code = waited.result()
        result = self._result(code, stopped, bytes(tail), spec)
        if result.outcome == EXITED or spec.outputs:
            result.files, result.missing = collect(workdir, uid, spec.outputs, spec.output_file_bytes)
        return result

    def _result(self, code: int, stopped: list[tuple[str, str]], tail: bytes, spec: RunSpec) -> RunResult:
        if code < 0:
            sig: int | None = -code
        elif self.kind == BUBBLEWRAP and code > 128:
            sig = code - 128  # bubblewrap exits 128+n when the program died of signal n
        else:
            sig = None
        exit_code = None if sig is not None else code
        if stopped:
            return RunResult(stopped[0][0], stopped[0][1], exit_code, sig)
        if sig == signal.SIGXCPU:
            # The soft limit; the hard one, a second later, is SIGKILL for a program ignoring it.
            return RunResult(CPU_TIME, f"used its {spec.limits.cpu_seconds} s of CPU time", None, sig)
        if sig == signal.SIGXFSZ or (code != 0 and b"File too large" in tail):
            # Python ignores SIGXFSZ: its write fails with EFBIG instead.
            return RunResult(OUTPUT, f"wrote a file past {spec.limits.file_bytes} bytes", exit_code, sig)
        if code != 0 and any(marker in tail for marker in _OUT_OF_MEMORY):
            return RunResult(
                MEMORY, f"an allocation past {spec.limits.memory_bytes} bytes was refused", exit_code, sig
            )
        if sig is not None:
            return RunResult(EXITED, f"killed by signal {signal.Signals(sig).name}", None, sig)
        return RunResult(EXITED, f"exited with {code}", code, None)


def collect(
    workdir: Path, uid: int, outputs: tuple[str, ...], most: int
) -> tuple[dict[str, bytes], list[str]]:
    """The declared output files, read safely: a regular file of the job's uid with one link, inside
    the working directory, no symlink on the way (the job could point one at a host file)."""
    found: dict[str, bytes] = {}
    missing: list[str] = []
    for name in outputs:
        data = _read_inside(workdir, safe_path(name), uid, most)
        if data is None:
            missing.append(name)
        else:
            found[name] = data
    return found, missing


def _read_inside(workdir: Path, relative: PurePosixPath, uid: int, most: int) -> bytes | None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        for part in relative.parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(relative.parts[-1], flags, dir_fd=fd)
    except OSError:
        os.close(fd)
        return None
    os.close(fd)
    with os.fdopen(file_fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_nlink != 1:
            return None
        return handle.read(most)
