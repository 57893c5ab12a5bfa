"""The CLI as a user meets it: `--version`, one-line failures (`--debug` for the trace), `migrate`'s
progress and rollbacks, and a `run` that leaves no embedded PostgreSQL behind when it is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from coder.shared import db
from coder.shared.devservers import RedisServer, free_port
from coder.tests.support.databases import _admin, drop_database

CLI = str(Path(sys.executable).with_name("coder-platform"))


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def test_version() -> None:
    done = cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"coder-platform {version('coder-platform')}"


def test_a_configuration_error_is_one_line_naming_the_variable() -> None:
    done = cli("migrate", CODER_TRUSTED_PROXIES="not-an-address")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "coder-platform: error: configuration: CODER_TRUSTED_PROXIES: Value error, 'not-an-address' is "
        "not an IP address or CIDR (--debug shows the traceback)"
    ]


def test_an_unreachable_database_is_one_line_and_debug_shows_the_trace() -> None:
    port = free_port()  # nothing listens there
    unreachable = f"postgresql+asyncpg://coder@127.0.0.1:{port}/coder"
    done = cli("migrate", DATABASE_URL=unreachable)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("coder-platform: error: ConnectionRefusedError: ")
    assert str(port) in line

    debug = cli("--debug", "migrate", DATABASE_URL=unreachable)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and len(debug.stderr.splitlines()) > 20


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A database with no tables: `migrate` starts from nothing."""
    name = f"coder_cli_{os.urandom(4).hex()}"
    asyncio.run(_admin(database_url, f'CREATE DATABASE "{name}"'))
    url = db.make_url_for_database(database_url, name)
    yield url
    asyncio.run(drop_database(url))


def test_migrate_shows_each_revision_and_rolls_back_with_to(empty_database: str) -> None:
    up = cli("migrate", "--target", "secrets", DATABASE_URL=empty_database)
    assert up.returncode == 0, up.stderr
    assert up.stderr.splitlines() == [
        "coder-platform: secrets: upgrade 0001 (secrets: initial tables)",
        "coder-platform: migrated secrets",
    ]

    down = cli("migrate", "--target", "secrets", "--to", "base", DATABASE_URL=empty_database)
    assert down.returncode == 0, down.stderr
    assert down.stderr.splitlines() == [
        "coder-platform: secrets: downgrade 0001 (secrets: initial tables)",
        "coder-platform: migrated secrets to base",
    ]
    again = cli("migrate", "--target", "secrets", "--to", "0001", DATABASE_URL=empty_database)
    assert again.stderr.splitlines()[0] == "coder-platform: secrets: upgrade 0001 (secrets: initial tables)"

    unknown = cli("migrate", "--target", "secrets", "--to", "0999", DATABASE_URL=empty_database)
    assert unknown.returncode == 1
    assert "Can't locate revision identified by '0999'" in unknown.stderr
    several = cli("migrate", "--to", "base", DATABASE_URL=empty_database)
    assert several.returncode == 2 and "Invalid value for --to" in several.stderr


def _postmasters(data_dir: Path) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"postgres -D {data_dir}/postgres"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stops_its_embedded_postgresql(
    stop: signal.Signals, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("embedded")
    log = data_dir / "run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "AMQP_URL")}
    env["CODER_DATA_DIR"] = str(data_dir)
    port = free_port()
    process = subprocess.Popen(
        [CLI, "run", "--target", "secrets", "--port", str(port), "--metrics-port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert _postmasters(data_dir), "the embedded server should run while `run` does"
        process.send_signal(stop)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = log.read_text()
    assert process.returncode == 0, stderr
    assert "Warning" not in stderr, stderr  # e.g. platformdirs' RuntimeDirWarning
    assert _postmasters(data_dir) == []


def _holders(port: int) -> set[int]:
    """The processes holding connections accepted on `port`."""
    found = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(pid) for pid in re.findall(r"pid=(\d+)", found.stdout)}


def test_run_with_workers_serves_from_several_processes(redis_server: RedisServer, tmp_path: Path) -> None:
    """`run --workers 2`: two processes accept on the one port (told apart by who holds each
    connection), each on a listening socket of its own, and stopping `run` stops both, and the
    embedded PostgreSQL they shared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_", "GATEWAY_"))}
    env.pop("DATABASE_URL", None)
    env |= {"REDIS_URL": redis_server.url, "CODER_DATA_DIR": str(tmp_path)}
    log = tmp_path / "run.log"
    port = free_port()
    argv = [CLI, "run", "--target", "gateway", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True
    )
    try:
        serving: set[int] = set()
        deadline = time.monotonic() + 300  # each worker imports and builds the app: slow on a busy machine
        while len(serving) < 2:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            # Fresh keep-alive connections, each answered, then found among the workers' sockets.
            with contextlib.ExitStack() as stack:
                clients = [stack.enter_context(httpx.Client(timeout=5)) for _ in range(8)]
                try:
                    for client in clients:
                        assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                except (httpx.ConnectError, httpx.TimeoutException):  # not serving yet
                    time.sleep(0.2)
                    continue
                serving |= _holders(port)
        # Each worker listens on a socket of its own (SO_REUSEPORT), so the kernel spreads connections
        # evenly; one socket shared by both let whichever woke first accept a whole burst.
        listening = subprocess.run(
            ["ss", "-Htlnp", f"( sport = :{port} )"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        owners = [set(re.findall(r"pid=(\d+)", line)) for line in listening]
        assert len(owners) == 2 and all(len(o) == 1 for o in owners) and owners[0] != owners[1], listening
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the workers too: killed alone, `run` leaves them
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert process.pid not in serving
    assert not [pid for pid in serving if Path(f"/proc/{pid}").exists()]
    assert "with 2 workers" in log.read_text()
    assert _postmasters(tmp_path) == []


def test_run_refuses_workers_without_a_shared_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CODER_DATA_DIR")}
    done = subprocess.run(
        [CLI, "run", "--target", "gateway", "--workers", "2", "--port", str(free_port())],
        env={**env, "CODER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "more than one worker needs REDIS_URL" in done.stderr
