from coder.services.execution.api import router
from coder.services.execution.config import ExecutionSettings
from coder.services.execution.descriptor import descriptor
from coder.services.execution.models import Base
from coder.services.execution.worker import work
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=ExecutionSettings,
    background=(work,),
)
