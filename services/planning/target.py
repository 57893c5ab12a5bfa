from coder.services.planning.api import router
from coder.services.planning.descriptor import descriptor
from coder.services.planning.models import Base
from coder.services.planning.quality_gate import on_quality_gate_changed
from coder.shared.contracts.quality import GateChanged
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={GateChanged.event_type: on_quality_gate_changed},
)
