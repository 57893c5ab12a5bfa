"""The process app: one ASGI app serving the targets a process runs (`run --target ...`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Mount
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from coder.runner import registry
from coder.shared.app import NO_NATIVE_TELEMETRY, VERSION, _add_health, create_target_app
from coder.shared.errors import install_problem_handlers
from coder.shared.logship import LogShipper
from coder.shared.metrics import metrics_app
from coder.shared.protocol import ProtocolMiddleware
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings, TargetSettings, load_target_settings
from coder.shared.target import Target
from coder.shared.telemetry import configure_logging, configure_tracing, json_formatter


def build_process_app(
    settings: PlatformSettings,
    targets: Mapping[str, Target],
    target_settings: Iterable[TargetSettings] | None = None,
) -> FastAPI:
    """The ASGI app of a process running `targets` (wiring from `registry.resolve`).

    `target_settings`: each target's settings; by default read from the environment here, once,
    before anything is opened, so a misconfigured target stops the process at once.

    With the gateway among them, the gateway's app is the root and reaches the others in-process.
    Without it, each target is mounted at `/api/<target>`, the path the gateway would give it.
    Every other registered target is reached over HTTP at the port its descriptor names.
    """
    configure_logging(settings.log_level)
    configure_tracing(settings.otel_service_name or "coder-" + "-".join(targets))
    if target_settings is None:
        target_settings = [
            load_target_settings(t.settings, settings.environment)
            for t in targets.values()
            if t.settings is not None
        ]
    runtime = Runtime(settings, targets, registry.descriptors(), target_settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shipper = _ship_logs(settings, "-".join(targets))
        try:
            await runtime.start()
            try:
                with collector_tuned():
                    yield
            finally:
                await runtime.stop()
        finally:
            if shipper is not None:
                logging.getLogger().removeHandler(shipper)
                await asyncio.to_thread(shipper.close)

    # One /metrics for the process (served apart by `run`, shared/metrics.py), whatever it serves.
    metrics = metrics_app(runtime)
    runtime.metrics_apps.update(dict.fromkeys(targets, metrics))
    root_target = targets.get("gateway") or (next(iter(targets.values())) if len(targets) == 1 else None)
    for name, target in targets.items():
        if target is not root_target:
            runtime.local_apps[name] = create_target_app(target, runtime)
    if root_target is not None:
        root = create_target_app(root_target, runtime, process_root=True, lifespan=lifespan)
        runtime.local_apps[root_target.name] = root
        return _behind_proxies(root, settings)
    root = FastAPI(
        title="Coder Platform",
        version=VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    root.state.runtime = runtime
    install_problem_handlers(root)
    root.add_middleware(ProtocolMiddleware)
    _add_health(root, runtime, list(targets.values()))
    for name, app in runtime.local_apps.items():
        root.router.routes.append(Mount(f"/api/{name}", app=app))
    return _behind_proxies(root, settings)


# Container objects allocated (net) before the cyclic collector runs; CPython's default is 700.
GC_THRESHOLD = 10_000


@contextlib.contextmanager
def collector_tuned() -> Iterator[None]:
    """While serving. What startup built lives as long as the process: frozen out of the collector's
    sight, so a full collection walks only what serving allocates (not a million objects, ~0.3 s
    each). And a request that holds a few thousand objects at once (a batch of 500 events) no longer
    sets off collections that walk them and move them to older generations, to be walked again there.
    At shutdown all is collectable again (a test session starts many platforms in one process)."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


# `run --workers N`: the targets each worker serves (set by `run` for the processes it starts).
WORKER_TARGETS = "CODER_WORKER_TARGETS"


def worker_app() -> FastAPI:
    """The app of one of `run --workers N`'s processes (uvicorn's factory, called in each of them)."""
    # uvicorn re-raises the SIGTERM that stopped a worker once it is done: its default action would end
    # the worker there, skipping the exit handlers (the one that stops an embedded PostgreSQL when its
    # last user leaves). A normal exit instead, as `run` does for itself.
    signal.signal(signal.SIGTERM, _exit)
    names = registry.select(os.environ[WORKER_TARGETS])
    return build_process_app(PlatformSettings(), {name: registry.wiring(name) for name in names})


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _ship_logs(settings: PlatformSettings, service: str) -> LogShipper | None:
    """The process's logs also go to the logging target, when CODER_LOG_SHIP_URL says where."""
    if not settings.log_ship_url:
        return None
    shipper = LogShipper(
        settings.log_ship_url,
        settings.log_ship_token,
        {"service": settings.otel_service_name or f"coder-{service}"},
        capacity=settings.log_ship_buffer,
        formatter=json_formatter(),
    )
    logging.getLogger().addHandler(shipper)
    return shipper


def _behind_proxies(root: FastAPI, settings: PlatformSettings) -> FastAPI:
    """The client's own address from X-Forwarded-For, only when a configured proxy sent it (uvicorn's
    middleware, applied here rather than by the server so every way of serving the app agrees)."""
    if settings.trusted_proxies:
        root.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    return root
