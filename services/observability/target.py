from coder.services.observability.api import router
from coder.services.observability.config import ObservabilitySettings
from coder.services.observability.descriptor import descriptor
from coder.services.observability.genai import on_ai_requests_completed
from coder.services.observability.models import Base
from coder.services.observability.scrape import poller
from coder.shared.events import Batched
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={"ai.request.completed": Batched(on_ai_requests_completed)},
    consume_batch=32,  # one idempotent insert per batch of model calls, one commit
    settings=ObservabilitySettings,
    background=(poller,),
)
