"""The app factory: every target's FastAPI app, and the process app that serves one or many targets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Mount

from coder.shared.errors import (
    PROBLEM_BASE,
    PROBLEM_MEDIA_TYPE,
    install_problem_handlers,
    install_problem_openapi,
)
from coder.shared.runtime import Runtime
from coder.shared.settings import PlatformSettings
from coder.shared.target import Target
from coder.shared.telemetry import TelemetryMiddleware, configure_logging, configure_tracing

VERSION = "0.1.0"


def _add_health(app: FastAPI, runtime: Runtime, targets: list[Target]) -> None:
    needs = {need.value for t in targets for need in t.needs}

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. No dependency is checked here."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz() -> Response:
        """Readiness: every data store this process needs answers; names the ones that do not."""
        checks = {k: v for k, v in (await runtime.readiness()).items() if k in needs}
        failed = sorted(k for k, v in checks.items() if v != "ok")
        if failed:
            body: dict[str, Any] = {
                "type": PROBLEM_BASE + "not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": f"dependency not ready: {', '.join(failed)}",
                "checks": checks,
            }
            return Response(_json(body), status_code=503, media_type=PROBLEM_MEDIA_TYPE)
        return Response(_json({"status": "ready", "checks": checks}), media_type="application/json")

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _json(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def create_target_app(
    target: Target, runtime: Runtime, *, process_root: bool = False, **fastapi_kwargs: Any
) -> FastAPI:
    """One target's app: its routes, health, metrics, problem+json errors and telemetry.

    As the process root, its readiness covers every target in the process."""
    app = FastAPI(
        # FastAPI's native OpenTelemetry: server spans (traceparent in, context for logs and
        # outgoing calls). Metrics stay Prometheus (telemetry.py), logs stay JSON on stderr.
        telemetry={"tracing": True, "metrics": False, "logs": False},
        title=f"Coder Platform: {target.title}",
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        **fastapi_kwargs,
    )
    app.state.runtime = runtime
    app.state.target = target
    install_problem_handlers(app)
    install_problem_openapi(app, target.problems)
    _add_health(app, runtime, list(runtime.targets.values()) if process_root else [target])
    app.include_router(target.router)
    if target.setup is not None:
        target.setup(app, runtime)
    app.add_middleware(TelemetryMiddleware, target=target.name)
    return app


def build_process_app(
    settings: PlatformSettings, targets: Mapping[str, Target], known_targets: Mapping[str, Target]
) -> FastAPI:
    """The ASGI app of a process running `targets`.

    With the gateway among them, the gateway's app is the root and reaches the others in-process.
    Without it, each target is mounted at `/api/<target>`, the path the gateway would give it.
    """
    configure_logging(settings.log_level)
    configure_tracing(
        settings.otel_service_name or "coder-" + "-".join(targets), settings.otel_exporter_otlp_endpoint
    )
    runtime = Runtime(settings, targets, known_targets)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    root_target = targets.get("gateway") or (next(iter(targets.values())) if len(targets) == 1 else None)
    for name, target in targets.items():
        if target is not root_target:
            runtime.local_apps[name] = create_target_app(target, runtime)
    if root_target is not None:
        root = create_target_app(root_target, runtime, process_root=True, lifespan=lifespan)
        runtime.local_apps[root_target.name] = root
        return root
    root = FastAPI(title="Coder Platform", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    root.state.runtime = runtime
    install_problem_handlers(root)
    _add_health(root, runtime, list(targets.values()))
    for name, app in runtime.local_apps.items():
        root.router.routes.append(Mount(f"/api/{name}", app=app))
    return root


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
