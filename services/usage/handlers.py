"""Events from the bus."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal

from pydantic import ValidationError

from coder.services.usage.meters import store_events
from coder.services.usage.reservations import Spend, settle_batch
from coder.services.usage.schemas import EVENTS, EventIn, Metric
from coder.shared.contracts.ai import AiRequestCompleted
from coder.shared.events import CloudEvent, EventContext

# --- events from the bus ---


async def on_ai_requests_completed(events: Sequence[CloudEvent], context: EventContext) -> None:
    """Store the requests as usage events and charge their cost and tokens to the budgets: through
    the reservation a request names when it is still open (settled over HTTP already: counted),
    directly otherwise. A batch of deliveries is handled at once, org by org (`settle_batch`: a few
    statements for the lot, not a few per request). The inbox makes this run once per event id; a
    malformed event raises (its batch is handled again event by event) and ends in the dead-letter
    queue."""
    session, cache = context.session, context.cache
    assert cache is not None, "usage needs redis"
    orgs: dict[str, tuple[list[EventIn], list[Spend]]] = {}
    for event in events:
        org_id = event.orgid
        if not org_id:
            raise ValueError(f"event {event.id} has no orgid: it cannot be attributed to an organization")
        try:
            usage = AiRequestCompleted.model_validate(event.data)
            stored = EVENTS.validate_python(
                [
                    {
                        "id": event.id,
                        "source": event.source,
                        "type": event.type,
                        "subject": event.subject,
                        "time": event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC),
                        "data": event.data,
                    }
                ]
            )
        except ValidationError as exc:
            raise ValueError(f"event {event.id} has malformed data: {exc}") from None
        found, spends = orgs.setdefault(org_id, ([], []))
        found += stored
        spends.append(
            Spend(
                (usage.user_id, usage.team_id, usage.api_key_id),
                {
                    Metric.COST_USD: usage.cost_usd,
                    Metric.TOKENS: Decimal(usage.prompt_tokens + usage.completion_tokens),
                },
                usage.reservation_id,
            )
        )
    for org_id, (found, spends) in orgs.items():
        await store_events(session, org_id, found)
        await settle_batch(session, cache, org_id, spends)
