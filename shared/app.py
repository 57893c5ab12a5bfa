"""The app factory: one target's FastAPI app (coder.runner.process composes them into a process)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Response

from coder.shared.errors import (
    PROBLEM_BASE,
    PROBLEM_MEDIA_TYPE,
    install_problem_handlers,
    install_problem_openapi,
)
from coder.shared.protocol import ProtocolMiddleware
from coder.shared.runtime import Runtime
from coder.shared.schemas import storable_parameters
from coder.shared.target import Target
from coder.shared.telemetry import TelemetryMiddleware

VERSION = "0.1.0"
# FastAPI's native OpenTelemetry (on by default once a tracer provider is set) stays off: its wrapper
# cost a third of a proxied request's CPU. TelemetryMiddleware makes the server span instead.
NO_NATIVE_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


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


def _json(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def create_target_app(
    target: Target, runtime: Runtime, *, process_root: bool = False, **fastapi_kwargs: Any
) -> FastAPI:
    """One target's app: its routes, health, problem+json errors and telemetry (server spans, access log
    and metrics: TelemetryMiddleware; metrics are served apart, shared/metrics.py).

    As the process root, its readiness covers every target in the process."""
    app = FastAPI(
        telemetry=NO_NATIVE_TELEMETRY,
        title=f"Coder Platform: {target.title}",
        version=VERSION,
        docs_url=None,
        redoc_url=None,
        # Query strings and path parameters of every route keep the text rules; bodies keep them
        # through their `Input` models.
        dependencies=[Depends(storable_parameters)],
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
    # Outside the target's own middleware (the gateway's edge, CORS), inside telemetry: refusals here
    # are logged and counted like any answer.
    app.add_middleware(ProtocolMiddleware)
    app.add_middleware(TelemetryMiddleware, target=target.name)
    return app
