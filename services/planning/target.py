from coder.services.planning.api import router
from coder.services.planning.descriptor import descriptor
from coder.services.planning.models import Base
from coder.shared.target import Target

target = Target(descriptor=descriptor, router=router, metadata=Base.metadata, events=Base.events)
