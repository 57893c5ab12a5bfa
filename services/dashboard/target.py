from coder.services.dashboard.api import router
from coder.services.dashboard.descriptor import descriptor
from coder.services.dashboard.models import Base
from coder.shared.target import Target

target = Target(descriptor=descriptor, router=router, metadata=Base.metadata, events=Base.events)
