from coder.shared.target import Target
from coder.tests.runner.notes.api import router
from coder.tests.runner.notes.descriptor import descriptor
from coder.tests.runner.notes.models import Base

target = Target(descriptor=descriptor, router=router, metadata=Base.metadata, events=Base.events)
