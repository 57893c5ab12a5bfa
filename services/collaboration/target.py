from fastapi import FastAPI

from coder.services.collaboration.api import router
from coder.services.collaboration.config import CollaborationSettings
from coder.services.collaboration.descriptor import descriptor
from coder.services.collaboration.models import Base
from coder.services.collaboration.rooms import Rooms
from coder.shared.runtime import Runtime
from coder.shared.target import Target


def setup(app: FastAPI, runtime: Runtime) -> None:
    """The live rooms of this process, closed before the database and Redis they use."""
    rooms = Rooms(runtime)
    app.state.collaboration_rooms = rooms
    runtime.on_stop.append(rooms.close)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=CollaborationSettings,
    setup=setup,
)
