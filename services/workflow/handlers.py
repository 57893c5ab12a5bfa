"""Events from the bus: they end the waits of event steps, and start the runs of triggered definitions."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, select

from coder.services.workflow.engine import record, wake_all
from coder.services.workflow.models import Definition, Step, Version
from coder.services.workflow.service import start_run
from coder.shared.events import CloudEvent, EventContext
from coder.shared.repository import owned_by

log = logging.getLogger(__name__)
MISSING = object()


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def matches(match: dict[str, Any], data: Any) -> bool:
    """Every field of `match` (a dotted path into the event's data) equals its value."""
    return all(_field(data, path) == value for path, value in match.items())


async def on_event(cloud_event: CloudEvent, context: EventContext) -> None:
    """One delivery, in one transaction (the inbox makes a redelivery do nothing)."""
    org_id = cloud_event.orgid
    if not org_id:
        return  # an org's runs see only their org's events
    session = context.session
    data = cloud_event.data if isinstance(cloud_event.data, dict) else {}
    woke = False
    waiting = (
        select(Step)
        .where(owned_by(Step, org_id), Step.status == "waiting", Step.wait_event == cloud_event.type)
        .with_for_update()
    )
    for step in (await session.execute(waiting)).scalars():
        if matches((step.state or {}).get("match", {}), data):
            done = {"event_id": cloud_event.id, "type": cloud_event.type, "data": data}
            woke |= await record(
                session, step, fence=step.fence, ok=True, output=done, error=None, retryable=False
            )
    triggered = select(Definition).where(
        owned_by(Definition, org_id), Definition.trigger_event == cloud_event.type
    )
    for definition in (await session.execute(triggered)).scalars():
        version = await session.get(Version, (definition.id, definition.latest_version))
        trigger = (version.spec.get("trigger") if version else None) or {}
        if version is None or not matches(trigger.get("match", {}), data):
            continue
        await start_run(
            session,
            definition,
            version,
            actor=definition.owner,
            delegation=definition.delegation,
            trigger="event",
            input=data,
        )
        woke = True
    if woke:
        event.listen(session.sync_session, "after_commit", lambda _s: wake_all(), once=True)
