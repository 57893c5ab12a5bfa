from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from coder.gateway.config import GatewaySettings
from coder.gateway.edge import Gateway
from coder.gateway.middleware import EdgeMiddleware
from coder.gateway.models import Base
from coder.gateway.proxy import TargetProxy
from coder.gateway.routes import router
from coder.shared.runtime import Runtime
from coder.shared.target import Dependency, Target

EXPOSED_HEADERS = [
    "x-request-id",
    "server-timing",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "location",
]


def _setup(app: FastAPI, runtime: Runtime) -> None:
    """Wire the parts that need the live runtime; the proxy is mounted last, after every own route."""
    settings = runtime.config(GatewaySettings)
    gateway = Gateway(runtime, settings)
    app.state.gateway = gateway
    proxy = TargetProxy(runtime, gateway)
    app.state.proxy = proxy
    app.mount("/api", proxy)
    # Added first, so it runs inside CORS: refusals (429, 413) carry CORS headers too.
    app.add_middleware(EdgeMiddleware, gateway=gateway, proxy=proxy)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=settings.cors_origin_regex,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
    runtime.on_stop.append(proxy.close)
    runtime.on_stop.append(gateway.close)


target = Target(
    name="gateway",
    port=3000,
    title="API gateway",
    package="coder.gateway",
    router=router,
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS}),
    metadata=Base.metadata,
    settings=GatewaySettings,
    setup=_setup,
    # The edge (middleware.py) in front of every route: rate limits, and fail-closed Redis checks.
    problems=frozenset({429, 503}),
)
