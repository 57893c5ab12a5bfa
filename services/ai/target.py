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
    platform = Platform(runtime, runtime.config(AiSettings))
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
