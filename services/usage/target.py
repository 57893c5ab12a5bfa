from coder.services.usage.api import router
from coder.services.usage.budgets import export_budgets
from coder.services.usage.descriptor import descriptor
from coder.services.usage.handlers import on_ai_request_completed
from coder.services.usage.models import Base
from coder.shared.target import Target

target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={"ai.request.completed": on_ai_request_completed},
    metrics=export_budgets,
)
