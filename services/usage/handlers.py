"""Events from the bus."""

from __future__ import annotations

import logging
from datetime import UTC
from decimal import Decimal

from pydantic import ValidationError

from coder.services.usage.budgets import charge
from coder.services.usage.meters import store_events
from coder.services.usage.reservations import find, settle_open
from coder.services.usage.schemas import (
    EventData,
    EventIn,
    Metric,
    ReservationStatus,
)
from coder.shared.contracts.ai import AiRequestCompleted
from coder.shared.events import CloudEvent, EventContext

log = logging.getLogger(__name__)


# --- events from the bus ---


async def on_ai_request_completed(event: CloudEvent, context: EventContext) -> None:
    """Store the request as a usage event and charge its cost and tokens to the budgets: through its
    reservation when it names one that is still open, directly otherwise. The inbox makes this run
    once per event id; a malformed event raises and ends in the dead-letter queue."""
    session, cache = context.session, context.cache
    org_id = event.orgid
    if not org_id:
        raise ValueError(f"event {event.id} has no orgid: it cannot be attributed to an organization")
    try:
        usage = AiRequestCompleted.model_validate(event.data)
        stored = EventIn(
            id=event.id,
            source=event.source,
            type=event.type,
            subject=event.subject,
            time=event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC),
            data=EventData.model_validate(event.data),
        )
    except ValidationError as exc:
        raise ValueError(f"event {event.id} has malformed data: {exc}") from None
    await store_events(session, org_id, [stored])
    assert cache is not None, "usage needs redis"
    reservation = None
    if usage.reservation_id is not None:
        reservation = await find(session, cache, org_id, usage.reservation_id, lock=True)
        if reservation is None:
            log.warning(
                "ai.request.completed names an unknown reservation; charging directly",
                extra={"event_id": event.id, "reservation_id": str(usage.reservation_id)},
            )
    tokens = Decimal(usage.prompt_tokens + usage.completion_tokens)
    spend = {Metric.COST_USD: usage.cost_usd, Metric.TOKENS: tokens}
    for metric, amount in spend.items():
        if reservation is not None and reservation.metric == metric.value:
            if reservation.status == ReservationStatus.RESERVED.value:
                await settle_open(session, cache, reservation, amount)
                continue
            if reservation.status == ReservationStatus.SETTLED.value:
                continue  # settled over HTTP already: this spend is counted
        await charge(
            session,
            cache,
            org_id,
            metric,
            amount,
            user_id=usage.user_id,
            team_id=usage.team_id,
            api_key_id=usage.api_key_id,
        )
