from coder.services.usage.api import router
from coder.services.usage.models import Base, events
from coder.services.usage.service import on_ai_request_completed
from coder.shared.target import Dependency, Target

target = Target(
    name="usage",
    port=3004,
    title="Usage metering and budgets",
    package="coder.services.usage",
    router=router,
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    metadata=Base.metadata,
    events=events,
    consumes={"ai.request.completed": on_ai_request_completed},
)
