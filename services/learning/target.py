from coder.services.learning.api import router
from coder.services.learning.descriptor import descriptor
from coder.services.learning.models import Base
from coder.shared.target import Target

target = Target(descriptor=descriptor, router=router, metadata=Base.metadata, events=Base.events)
