from coder.services.quality.api import router
from coder.services.quality.descriptor import descriptor
from coder.services.quality.models import Base
from coder.shared.target import Target

target = Target(descriptor=descriptor, router=router, metadata=Base.metadata, events=Base.events)
