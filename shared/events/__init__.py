"""Events: CloudEvents envelope, transactional outbox and relay, idempotent consumers, two buses."""

from coder.shared.events.envelope import CloudEvent
from coder.shared.events.outbox import Batched, Consumer, EventContext, EventTables, Handler

__all__ = ["Batched", "CloudEvent", "Consumer", "EventContext", "EventTables", "Handler"]
