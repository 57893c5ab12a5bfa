from fastapi import FastAPI

from coder.services.usage.api import router
from coder.services.usage.budgets import export_budgets
from coder.services.usage.descriptor import descriptor
from coder.services.usage.handlers import on_ai_requests_completed
from coder.services.usage.models import Base
from coder.services.usage.reservations import Reserver, sweeper
from coder.shared.events import Batched
from coder.shared.runtime import Runtime
from coder.shared.target import Target


def _setup(app: FastAPI, runtime: Runtime) -> None:
    reserver = Reserver(runtime)
    app.state.usage = reserver
    runtime.on_stop.append(reserver.close)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes={"ai.request.completed": Batched(on_ai_requests_completed)},
    # Model calls that end together settle in one transaction (one inbox claim, one commit), and
    # together in it (a few statements for the lot): each one's spend lands on the same budget rows,
    # which concurrent transactions would take in turn.
    consume_batch=32,
    setup=_setup,
    background=(sweeper,),
    metrics=export_budgets,
)
