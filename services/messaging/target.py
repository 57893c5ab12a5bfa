from fastapi import FastAPI

from coder.services.messaging.api import routes
from coder.services.messaging.config import MessagingSettings
from coder.services.messaging.descriptor import descriptor
from coder.services.messaging.live import Hub, prune
from coder.services.messaging.models import Base
from coder.shared.runtime import Runtime
from coder.shared.target import Target


def setup(app: FastAPI, runtime: Runtime) -> None:
    """The process's live-event hub (its Redis subscription starts with the first WebSocket)."""
    hub = Hub(runtime)
    app.state.messaging_hub = hub
    runtime.on_stop.append(hub.close)


target = Target(
    descriptor=descriptor,
    router=routes,
    metadata=Base.metadata,
    events=Base.events,
    settings=MessagingSettings,
    setup=setup,
    background=(prune,),
)
