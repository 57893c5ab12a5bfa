from coder.services.workflow.api import router
from coder.services.workflow.descriptor import CONSUMES, descriptor
from coder.services.workflow.engine import Engine
from coder.services.workflow.handlers import on_event
from coder.services.workflow.identity import Delegations
from coder.services.workflow.models import Base
from coder.services.workflow.settings import WorkflowSettings
from coder.services.workflow.steps import StepRunner
from coder.shared.runtime import Runtime
from coder.shared.target import Target


async def work(runtime: Runtime) -> None:
    """This process's worker: claims and runs ready steps, sweeps timeouts, fires schedules."""
    settings = runtime.config(WorkflowSettings)
    delegations = Delegations(runtime.clients, runtime.settings.workload_secrets.get("workflow"))
    engine = Engine(
        runtime.sessions,
        StepRunner(runtime.clients, delegations),
        lease_seconds=settings.lease_seconds,
        poll_seconds=settings.poll_seconds,
        concurrency=settings.concurrency,
    )
    await engine.run()


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    consumes=dict.fromkeys(CONSUMES, on_event),
    settings=WorkflowSettings,
    background=(work,),
)
