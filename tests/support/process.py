"""`coder-platform run` as a real process on a loopback port, for the tests that speak to it over sockets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from coder.shared.devservers import free_port
from coder.tests.support.logscan import LogCapture


@contextmanager
def platform_process(env: dict[str, str], log: Path, log_capture: LogCapture) -> Iterator[str]:
    """`coder-platform run --target all` on a free port, once `/healthz` answers: its base URL. Its
    /metrics listens on CODER_METRICS_PORT when `env` names one, else on any free port. The process is
    stopped afterwards and its output joins the log scan."""
    port = free_port()
    env = {"CODER_METRICS_PORT": "0", **env}
    cli = str(Path(sys.executable).with_name("coder-platform"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [cli, "run", "--target", "all", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # importing every target takes a while on a busy machine
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_capture.add_text(log.read_text())
