"""Events from the bus."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from pydantic import ValidationError

from coder.services.usage.budgets import applicable, charge
from coder.services.usage.meters import store_events
from coder.services.usage.reservations import settle_spent
from coder.services.usage.schemas import EVENTS, Metric
from coder.shared.contracts.ai import AiRequestCompleted
from coder.shared.events import CloudEvent, EventContext

# --- events from the bus ---


async def on_ai_request_completed(event: CloudEvent, context: EventContext) -> None:
    """Store the request as a usage event and charge its cost and tokens to the budgets: through its
    reservation when it names one that is still open (settled over HTTP already: counted), directly
    otherwise. The inbox makes this run once per event id; a malformed event raises and ends in the
    dead-letter queue."""
    session, cache = context.session, context.cache
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
    await store_events(session, org_id, stored)
    assert cache is not None, "usage needs redis"
    spend = {
        Metric.COST_USD: usage.cost_usd,
        Metric.TOKENS: Decimal(usage.prompt_tokens + usage.completion_tokens),
    }
    # Every budget covering the spender, of either metric, in one query.
    spender = (usage.user_id, usage.team_id, usage.api_key_id)
    budgets = await applicable(session, org_id, None, *spender)
    counted = None
    if usage.reservation_id is not None:
        counted = await settle_spent(session, cache, org_id, usage.reservation_id, spend, spender, budgets)
    for metric, amount in spend.items():
        if metric is not counted:
            await charge(session, cache, metric, [b for b in budgets if b.metric == metric.value], amount)
