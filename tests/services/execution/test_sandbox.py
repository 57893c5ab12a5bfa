"""The local sandbox against what a job may try: each limit stops it and says why, and each escape
tried is stopped. Runs the sandbox directly (no platform: the queue and API are tested apart), with
small limits, every case of a group at once."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coder.services.execution.sandbox import (
    BUBBLEWRAP,
    RLIMITS,
    Limits,
    LocalSandbox,
    RunResult,
    RunSpec,
    Sink,
    UidPool,
    probe_bubblewrap,
    processes_of,
)

# Its own uids: other test processes on the host take theirs from the default pool.
UID_BASE = 64000
SMALL = Limits(
    cpu_seconds=1,
    wall_seconds=20,
    memory_bytes=256 << 20,
    processes=32,
    output_bytes=64 << 10,
    file_bytes=1 << 20,
)


class Collect(Sink):
    def __init__(self) -> None:
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.cancel = False

    async def output(self, stream: str, data: bytes) -> None:
        self.data[stream].extend(data)

    async def tick(self) -> bool:
        return self.cancel

    @property
    def stdout(self) -> str:
        return self.data["stdout"].decode(errors="replace")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> UidPool:
    return UidPool(UID_BASE, 32, tmp_path_factory.mktemp("uids"))


@pytest.fixture(scope="module", params=[BUBBLEWRAP, RLIMITS])
def sandbox(request: pytest.FixtureRequest, pool: UidPool) -> Iterator[LocalSandbox]:
    kind: str = request.param
    uid = pool.take()
    assert uid is not None
    try:
        if kind == BUBBLEWRAP and probe_bubblewrap(uid) is not None:
            pytest.skip("bubblewrap does not run here")
    finally:
        pool.give_back(uid)
    # Not under pytest's tmp_path: a job's uid must be able to pass through every parent directory.
    root = Path(tempfile.gettempdir()) / f"coder-execution-test-{uuid.uuid4().hex[:8]}"
    yield LocalSandbox(kind, root, pool, tick_seconds=0.1)
    shutil.rmtree(root, ignore_errors=True)


async def run(
    sandbox: LocalSandbox, argv: list[str], limits: Limits = SMALL, **fields: object
) -> tuple[RunResult, Collect]:
    sink = Collect()
    spec = RunSpec(job_id=f"t-{id(sink):x}", argv=argv, limits=limits, **fields)  # type: ignore[arg-type]
    return await sandbox.run(spec, sink), sink


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


async def test_process_limit_holds_before_any_fork_bomb(sandbox: LocalSandbox) -> None:
    """The harmless check first: 200 sleeps under a limit of 32 processes. The kernel refuses the
    forks past the limit, or the sandbox stops the job on seeing it at its limit; never more start."""
    code = (
        "import subprocess\nstarted=[]\nrefused=0\n"
        "for _ in range(200):\n"
        "    try: started.append(subprocess.Popen(['sleep','30']))\n"
        "    except OSError: refused+=1\n"
        "    print(len(started), refused, flush=True)\n"
        "for p in started: p.kill()\n"
    )
    result, sink = await run(sandbox, py(code))
    counts = [tuple(map(int, line.split())) for line in sink.stdout.splitlines() if line.strip()]
    assert counts and max(started for started, _ in counts) < 32, (result, counts[-3:])
    assert result.outcome == "processes" or counts[-1] == (counts[-1][0], 200 - counts[-1][0]), result
    assert result.outcome == "processes" or counts[-1][1] > 168, (result, counts[-1])


async def test_limits_stop_each_hog_and_say_why(sandbox: LocalSandbox) -> None:
    # The classic bomb, its first shell staying (else the job has ended and every fork dies with it).
    bomb = ["sh", "-c", "b() { b | b & }; b; sleep 60"]
    memory = py("x = bytearray(1 << 30)")
    loop = py("while True: pass")
    flood = py("import sys\nchunk = b'x' * (1 << 20)\nfor _ in range(1024): sys.stdout.buffer.write(chunk)")
    sleeper = ["sleep", "600"]
    wall = Limits(**{**SMALL.__dict__, "wall_seconds": 2})
    results = await asyncio.gather(
        run(sandbox, bomb),
        run(sandbox, memory),
        run(sandbox, loop),
        run(sandbox, flood),
        run(sandbox, sleeper, wall),
    )
    outcomes = [r.outcome for r, _ in results]
    assert outcomes == ["processes", "memory", "cpu_time", "output", "wall_time"], [r for r, _ in results]
    assert "32 processes" in results[0][0].reason
    assert results[3][0].reason == f"the output passed {SMALL.output_bytes} bytes"
    # Only the limit's worth of the 1 GiB was kept.
    assert len(results[3][1].data["stdout"]) == SMALL.output_bytes
    # Nothing of any of them is left running.
    for uid in range(UID_BASE, UID_BASE + 32):
        assert processes_of(uid) == []


async def test_runs_as_a_uid_of_its_own_in_its_own_directory(sandbox: LocalSandbox) -> None:
    code = "import os\nprint(os.getuid(), os.getgid(), os.getgroups(), os.getcwd(), sorted(os.listdir('.')))"
    (_, one), (_, two) = await asyncio.gather(
        run(sandbox, py(code), files={"mine.txt": b"1"}), run(sandbox, py(code), files={"theirs.txt": b"2"})
    )
    uid1, gid1, groups1, cwd1, files1 = one.stdout.split(" ", 4)
    uid2, _, _, cwd2, files2 = two.stdout.split(" ", 4)
    assert int(uid1) >= UID_BASE and int(uid2) >= UID_BASE and uid1 != uid2
    assert gid1 == uid1 and groups1 in ("[]", f"[{gid1}]")
    assert "mine.txt" in files1 and "theirs.txt" not in files1
    assert "theirs.txt" in files2 and "mine.txt" not in files2
    if sandbox.kind == BUBBLEWRAP:
        assert cwd1 == cwd2 == "/work"
    else:
        assert cwd1 != cwd2


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []

    def serve() -> None:
        try:
            while True:
                conn, _ = server.accept()
                accepted.append(conn)
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


async def test_escapes_are_stopped(sandbox: LocalSandbox, loopback_server: int, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host data")
    secret.chmod(0o600)
    connect = py(
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {loopback_server}), timeout=3); print('connected')\n"
        "except OSError as e: print('refused', e.errno)"
    )
    # Reads a host file, becomes root, daemonizes out of the session, links a host file as an output.
    read_host = py(f"print(open({str(secret)!r}).read())")
    become_root = py("import os\ntry:\n    os.setuid(0); print('root')\nexcept OSError: print('refused')")
    daemon = ["sh", "-c", "setsid sh -c 'sleep 300' </dev/null >/dev/null 2>&1 & echo started"]
    link_out = ["sh", "-c", f"ln -s {secret} out.txt; ln -s /etc/shadow shadow.txt; echo linked"]
    (_, n), (read, r), (_, rt), (_, d), (linked, lk) = await asyncio.gather(
        run(sandbox, connect),
        run(sandbox, read_host),
        run(sandbox, become_root),
        run(sandbox, daemon),
        run(sandbox, link_out, outputs=("out.txt", "shadow.txt")),
    )
    assert n.stdout.startswith("refused"), n.stdout
    assert "host data" not in r.stdout and read.exit_code != 0
    assert rt.stdout.strip() == "refused"
    assert d.stdout.strip() == "started"
    # The daemon went with the job: no process of any sandbox uid is left.
    for uid in range(UID_BASE, UID_BASE + 32):
        assert processes_of(uid) == []
    assert lk.stdout.strip() == "linked"
    assert linked.files == {} and sorted(linked.missing) == ["out.txt", "shadow.txt"]


async def test_network_when_granted(sandbox: LocalSandbox, loopback_server: int) -> None:
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {loopback_server}), timeout=3); print('connected')"
    result, sink = await run(sandbox, py(code), network=True)
    assert sink.stdout.strip() == "connected", (result, sink.data)


async def test_files_in_and_out_and_cancel(sandbox: LocalSandbox) -> None:
    code = "data = open('in/data.txt').read()\nopen('out.txt', 'w').write(data.upper())\nprint('done')"
    result, _ = await run(sandbox, py(code), files={"in/data.txt": b"hello"}, outputs=("out.txt", "none.txt"))
    assert result.outcome == "exited" and result.exit_code == 0, result
    assert result.files == {"out.txt": b"HELLO"} and result.missing == ["none.txt"]

    sink = Collect()
    spec = RunSpec(job_id="cancelled", argv=["sleep", "600"], limits=SMALL)
    task = asyncio.create_task(sandbox.run(spec, sink))
    sink.cancel = True
    cancelled = await task
    assert cancelled.outcome == "cancelled"
