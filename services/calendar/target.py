from coder.services.calendar.api import router
from coder.services.calendar.descriptor import descriptor
from coder.services.calendar.models import Base
from coder.services.calendar.reminders import ReminderWorker
from coder.shared.runtime import Runtime
from coder.shared.target import Target


async def deliver_reminders(runtime: Runtime) -> None:
    """Deliver reminders as they fall due, for as long as the process runs."""
    await ReminderWorker().run(runtime.sessions)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    background=(deliver_reminders,),
)
