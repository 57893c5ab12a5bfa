from coder.services.observability.api import router
from coder.services.observability.config import ObservabilitySettings
from coder.services.observability.descriptor import descriptor
from coder.services.observability.genai import on_ai_request_completed
from coder.services.observability.models import Base
from coder.services.observability.scrape import poller
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={"ai.request.completed": on_ai_request_completed},
    consume_batch=32,  # one idempotent insert per model call: a commit per batch, not per call
    settings=ObservabilitySettings,
    background=(poller,),
)
