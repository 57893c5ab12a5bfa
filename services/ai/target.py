import httpx
from fastapi import FastAPI

from coder.services.ai.api import router
from coder.services.ai.calls import Platform
from coder.services.ai.config import AiSettings
from coder.services.ai.descriptor import descriptor
from coder.services.ai.health import checker
from coder.services.ai.models import Base
from coder.shared.runtime import Runtime
from coder.shared.target import Target


def _setup(app: FastAPI, runtime: Runtime) -> None:
    settings = runtime.config(AiSettings)
    timeout = httpx.Timeout(settings.read_timeout_seconds, connect=settings.connect_timeout_seconds)
    # One pool to the providers for the process: connections are reused across calls. An idle one is
    # dropped before a server would close it (uvicorn after 5 s): a call sent on a connection the
    # server is closing fails with no answer, and its deployment would cool down for nothing.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=2.0)
    upstream = httpx.AsyncClient(timeout=timeout, limits=limits)
    platform = Platform(runtime, settings, upstream)
    app.state.ai = platform
    runtime.on_stop.append(platform.close)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=AiSettings,
    background=(checker,),
    setup=_setup,
)
