"""`coder-platform`: run targets, migrate, list targets, or bring up the whole platform locally.

Each command imports what it needs when it runs: `--help`, `targets` and `operator` read
descriptors only and load no web or database framework and no target's wiring (tests/runner/
test_imports.py checks it); `run --target secrets` loads secrets' wiring and no other target's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from coder.operator.main import cli as operator_cli
from coder.runner import registry

if TYPE_CHECKING:
    from coder.shared.settings import PlatformSettings
    from coder.shared.target import Target

# Plain help and errors: rich's formatting costs more to import than the rest of `--help` together.
app = typer.Typer(
    help="Coder Platform: the gateway and services of the Coder IDE.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

TargetOpt = Annotated[str, typer.Option("--target", "-t", help="`all`, or target names separated by commas")]

# Set by `--debug`: a failure shows its traceback instead of one line (see main()).
DEBUG = False


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"coder-platform {version('coder-platform')}")
        raise typer.Exit


@app.callback()
def options(
    debug: Annotated[bool, typer.Option("--debug", help="On failure, show the whole traceback")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit")
    ] = False,
) -> None:
    """Coder Platform: the gateway and services of the Coder IDE."""
    global DEBUG
    DEBUG = debug


def _select(selection: str) -> dict[str, Target]:
    try:
        names = registry.select(selection)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--target") from None
    return {name: registry.wiring(name) for name in names}


def _database_url(settings: PlatformSettings) -> str:
    if settings.database_url:
        return settings.database_url
    from coder.shared.embedded import embedded_database_url

    return embedded_database_url(Path(settings.data_dir))


@app.command()
def run(
    target: TargetOpt = registry.ALL,
    host: Annotated[str, typer.Option(envvar="CODER_HOST", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(envvar="CODER_PORT", help="Default: the target's own")] = None,
    workers: Annotated[
        int,
        typer.Option(
            envvar="CODER_WORKERS", min=1, help="Server processes sharing the port, each a copy of the app"
        ),
    ] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Prometheus /metrics for the cluster (CODER_METRICS_PORT, 9464; 0: any free)"),
    ] = None,
) -> None:
    """Serve the selected targets in this process (`all`: the gateway and every service, on :3000),
    and their Prometheus /metrics on a port of its own (9464), which the public port never answers."""

    from coder.runner.process import WORKER_TARGETS, build_process_app
    from coder.shared.server import serve, serve_workers
    from coder.shared.settings import PlatformSettings
    from coder.shared.target import Dependency, generated_workload_secrets, workload_secret

    targets = _select(target)
    settings = PlatformSettings()
    if metrics_port is not None:
        settings.metrics_port = metrics_port
    if "gateway" in targets:
        # The gateway that checks them runs here: a calling target without a secret gets one for
        # this process's life (in a cluster the operator generates them; `up` hands them out).
        generated = generated_workload_secrets(
            {n: t.descriptor for n, t in targets.items()}, settings.workload_secrets
        )
        settings.workload_secrets.update(generated)
        # Every worker reads the same ones.
        os.environ.update({workload_secret(name): secret for name, secret in generated.items()})
    if port is None:
        port = 3000 if "gateway" in targets or len(targets) > 1 else next(iter(targets.values())).port
    # Built here even for workers: a misconfigured target stops `run` at once, not each worker in turn.
    asgi: object = build_process_app(settings, targets)
    if workers > 1:
        # Workers share rate limits, the revocation list and events only through real servers.
        needs = set().union(*(t.descriptor.needs for t in targets.values()))
        if Dependency.REDIS in needs and not settings.redis_url:
            raise typer.BadParameter("more than one worker needs REDIS_URL", param_hint="--workers")
        if Dependency.RABBITMQ in needs and not settings.amqp_url:
            raise typer.BadParameter("more than one worker needs AMQP_URL", param_hint="--workers")
        # Each worker builds its own app (uvicorn imports the factory in every process).
        os.environ[WORKER_TARGETS] = ",".join(targets)
        asgi = "coder.runner.process:worker_app"
    if workers == 1:
        typer.echo(
            f"coder-platform: metrics for the cluster on http://{host}:{settings.metrics_port}/metrics",
            err=True,
        )
    else:
        # Each worker counts alone (one registry per process): one scrape would see a random worker.
        typer.echo("coder-platform: no /metrics with more than one worker: scale with replicas", err=True)
    typer.echo(
        f"coder-platform: serving {', '.join(targets)} on http://{host}:{port}"
        + (f" with {workers} workers" if workers > 1 else ""),
        err=True,
    )
    # uvicorn re-raises the signal that stopped it once it is done. SIGTERM's default action would end
    # the process there and then, skipping the exit handlers that stop an embedded PostgreSQL: turned
    # into KeyboardInterrupt like SIGINT, it ends `run` normally.
    signal.signal(signal.SIGTERM, _interrupt)
    options: dict[str, Any] = {
        "log_config": None,
        # X-Forwarded-For is applied by the app, from CODER_TRUSTED_PROXIES only (runner/process.py).
        "proxy_headers": False,
        "server_header": False,
        "ws": "websockets-sansio",
        "timeout_graceful_shutdown": 20,
    }
    with contextlib.suppress(KeyboardInterrupt):
        if workers > 1:
            serve_workers(
                asgi,  # type: ignore[arg-type]
                workers,
                # A worker answers the supervisor's pings once its interpreter has imported what it
                # needs: seconds on a busy node (uvicorn's 5 s default restarts it forever there).
                timeout_worker_healthcheck=60,
                host=host,
                port=port,
                **options,
            )
            return
        serve(
            asgi,  # type: ignore[arg-type]
            asgi.state.runtime.metrics_apps[next(iter(targets))],  # type: ignore[attr-defined]
            host=host,
            port=port,
            metrics_port=settings.metrics_port,
            **options,
        )


@app.command()
def migrate(
    target: TargetOpt = registry.ALL,
    to: Annotated[
        str | None,
        typer.Option(help="With one --target: the revision to move to, up or down (`base`: no tables)"),
    ] = None,
) -> None:
    """Bring the selected targets' tables to their newest revision (the operator runs this as a Job)."""
    import asyncio

    from coder.shared import db, migrations
    from coder.shared.settings import PlatformSettings

    targets = _select(target)
    if to is not None and len(targets) != 1:
        raise typer.BadParameter("a revision belongs to one target: name it with --target", param_hint="--to")
    settings = PlatformSettings()

    def progress(name: str, direction: str, revision: str, message: str) -> None:
        typer.echo(f"coder-platform: {name}: {direction} {revision} ({message})", err=True)

    async def go() -> None:
        engine = db.create_engine(_database_url(settings), pool_size=1)
        try:
            if to is None:
                await migrations.upgrade(engine, list(targets.values()), progress=progress)
            else:
                await migrations.move(engine, next(iter(targets.values())), to, progress=progress)
        finally:
            await engine.dispose()

    asyncio.run(go())
    where = "" if to is None else f" to {to}"
    typer.echo(f"coder-platform: migrated {', '.join(targets)}{where}", err=True)


@app.command()
def makemigrations(
    target: Annotated[str, typer.Argument(help="The target whose models changed")],
    message: Annotated[str, typer.Option("--message", "-m")],
) -> None:
    """Write the next migration of a target by comparing its models with the (migrated) database."""
    import asyncio

    from coder.shared import db, migrations
    from coder.shared.settings import PlatformSettings

    (selected,) = _select(target).values()
    settings = PlatformSettings()

    async def go() -> None:
        engine = db.create_engine(_database_url(settings), pool_size=1)
        try:
            await migrations.upgrade(engine, [selected])
            await migrations.revision(engine, selected, message)
        finally:
            await engine.dispose()

    asyncio.run(go())


@app.command()
def targets(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the run targets with their ports and dependencies."""
    everything = registry.descriptors().values()
    if as_json:
        rows = [
            {"name": t.name, "port": t.port, "needs": sorted(t.needs), "title": t.title} for t in everything
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    for t in everything:
        needs = ",".join(sorted(t.needs)) or "-"
        typer.echo(f"{t.name:<15}{t.port:<7}{needs:<28}{t.title}")


METRICS_OFFSET = 6000


@app.command()
def config() -> None:
    """Print the configuration reference: every setting of every target, as Markdown."""
    from coder.runner.configuration import reference

    typer.echo(reference(), nl=False)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the targets listen on")] = "127.0.0.1",
    port_offset: Annotated[int, typer.Option(help="Added to every target's port")] = 0,
) -> None:
    """Every target as its own process on its own port, against real PostgreSQL, Redis and RabbitMQ.

    Uses DATABASE_URL / REDIS_URL / AMQP_URL when set; otherwise starts the embedded PostgreSQL and
    local redis-server and rabbitmq-server processes. Ctrl-C stops everything it started. Each
    target's /metrics answers on its port + 6000 (the gateway's on :9000).
    """
    from coder.shared.devservers import LocalServer, RabbitServer, RedisServer
    from coder.shared.settings import PlatformSettings
    from coder.shared.target import generated_workload_secrets, service_urls, workload_secret

    settings = PlatformSettings()
    signal.signal(signal.SIGTERM, _interrupt)  # so a plain `kill` also stops everything started here
    owned: list[LocalServer] = []
    children: list[subprocess.Popen[bytes]] = []
    failed = False
    try:
        env = dict(os.environ)
        env["DATABASE_URL"] = _database_url(settings)
        if not settings.redis_url:
            owned.append(RedisServer().start())
            env["REDIS_URL"] = owned[-1].url
        if not settings.amqp_url:
            typer.echo("coder-platform: starting rabbitmq-server...", err=True)
            owned.append(RabbitServer().start())
            env["AMQP_URL"] = owned[-1].url
        everything = registry.descriptors()
        ports = {name: target.port + port_offset for name, target in everything.items()}
        urls = service_urls(ports, host=lambda _name: host)
        env["CODER_SERVICE_URLS"] = json.dumps(urls)
        # Each process's /metrics on its port + 6000 (the gateway's on 9000).
        metrics_ports = {name: port + METRICS_OFFSET for name, port in ports.items()}
        env["CODER_METRICS_URLS"] = json.dumps(service_urls(metrics_ports, host=lambda _name: host))
        for name, secret in generated_workload_secrets(everything, settings.workload_secrets).items():
            env[workload_secret(name)] = secret
        exe = [str(Path(sys.executable).with_name("coder-platform"))]
        subprocess.run([*exe, "migrate"], env=env, check=True)  # noqa: S603
        for name, port in ports.items():
            children.append(
                subprocess.Popen(  # noqa: S603
                    [
                        *exe,
                        "run",
                        "--target",
                        name,
                        "--host",
                        host,
                        "--port",
                        str(port),
                        "--metrics-port",
                        str(metrics_ports[name]),
                    ],
                    env=env,
                    # Our stdout carries only the "up" line below, which scripts and tests wait on.
                    stdout=sys.stderr,
                )
            )
        with contextlib.suppress(KeyboardInterrupt):
            processes = dict(zip(ports, children, strict=True))
            ready = _wait_ready(urls, processes)
            if ready:
                # Only now: before, the gateway could answer while a target it proxies to still
                # started, and the first request through it was a 502 "<target> is unreachable".
                typer.echo(f"coder-platform: {len(children)} targets up; gateway on {urls['gateway']}")
            while ready and all(child.poll() is None for child in children):
                time.sleep(0.5)
            dead = [name for name, child in processes.items() if child.poll() is not None]
            typer.echo(f"coder-platform: {', '.join(dead) or 'not ready'}; stopping everything", err=True)
            failed = True
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=25)
            if child.poll() is None:
                child.kill()
        for server in reversed(owned):
            server.stop()
    if failed:
        raise typer.Exit(1)


# `coder-platform operator [--namespace ...]` runs the Kubernetes operator; `operator crd` prints the CRD.
app.add_typer(operator_cli, name="operator")


def _wait_ready(
    urls: dict[str, str], processes: dict[str, subprocess.Popen[bytes]], timeout: float = 120.0
) -> bool:
    """Whether every target answered 200 on /readyz before one of them exited or `timeout` passed."""
    import httpx

    waiting = dict(urls)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while waiting:
            if any(processes[name].poll() is not None for name in processes):
                return False
            if time.monotonic() > deadline:
                typer.echo(f"coder-platform: not ready after {timeout:.0f}s: {', '.join(waiting)}", err=True)
                return False
            for name, url in list(waiting.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{url}/readyz").status_code == 200:
                        del waiting[name]
            if waiting:
                time.sleep(0.2)
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The entry point: a failure is one line on stderr and exit status 1; `--debug` shows the trace."""
    try:
        app()
    except Exception as exc:
        if DEBUG:
            raise
        typer.echo(f"coder-platform: error: {_one_line(exc)} (--debug shows the traceback)", err=True)
        sys.exit(1)


def _variable(model: str, loc: tuple[int | str, ...]) -> str:
    """The environment variable a settings field is read from (else the field's dotted path)."""
    from pydantic_settings import BaseSettings

    path = ".".join(str(part) for part in loc) or model
    classes = list(BaseSettings.__subclasses__())
    while classes:
        cls = classes.pop()
        classes.extend(cls.__subclasses__())
        field = cls.model_fields.get(str(loc[0])) if loc and cls.__name__ == model else None
        if field is not None:
            alias = field.validation_alias
            prefix = cls.model_config.get("env_prefix", "")
            return alias if isinstance(alias, str) else f"{prefix}{loc[0]}".upper()
    return path


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{_variable(exc.title, e['loc'])}: {e['msg']}" for e in exc.errors())
        return f"configuration: {problems}"
    # The database or a broker out of reach: the socket error is the cause, deep in a driver's stack.
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause is not exc:
        return f"{type(exc).__name__}: {cause}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
