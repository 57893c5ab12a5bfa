from fastapi import APIRouter, FastAPI

from coder.gateway.proxy import TargetProxy
from coder.shared.runtime import Runtime
from coder.shared.target import Target

router = APIRouter()


def _mount_proxy(app: FastAPI, runtime: Runtime) -> None:
    proxy = TargetProxy(runtime)
    app.mount("/api", proxy)
    runtime.on_stop.append(proxy.close)


target = Target(
    name="gateway",
    port=3000,
    title="API gateway",
    package="coder.gateway",
    router=router,
    needs=frozenset(),
    setup=_mount_proxy,
)
