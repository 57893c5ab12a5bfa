"""The process's Prometheus endpoint, for the cluster only: `/metrics` on a port of its own
(`CODER_METRICS_PORT`, 9464), never on the public app, so the gateway cannot expose it.

Gauges of state kept elsewhere are read when scraped: each local target's outbox (rows and the age
of the oldest), the dead-letter queue of each consuming target, and what a target's own `metrics`
hook refreshes (usage's budgets). The answer is OpenMetrics (with exemplars) when the scraper asks
for it, the Prometheus text format otherwise (`prometheus_client.exposition.choose_encoder`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client import REGISTRY, Gauge
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, literal, select, union_all
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

OUTBOX_EVENTS = Gauge(
    "coder_outbox_events", "Events committed to a target's outbox, not yet on the bus", ["target"]
)
OUTBOX_AGE = Gauge(
    "coder_outbox_oldest_age_seconds",
    "Age of the oldest event in a target's outbox (0 when empty)",
    ["target"],
)
DEAD_LETTERS = Gauge(
    "coder_dead_letter_events", "Events in a consuming target's dead-letter queue", ["target"]
)


async def collect_outboxes(runtime: Runtime) -> None:
    """Every local target's outbox in one statement: rows and the oldest row's age."""
    owners = {name: t.events for name, t in runtime.targets.items() if t.events is not None}
    if not owners or runtime.engine is None:
        return
    statement = union_all(
        *(
            select(literal(name).label("target"), func.count(), func.min(tables.outbox.c.created_at))
            for name, tables in owners.items()
        )
    )
    with suppress_instrumentation():  # the scrapes stay out of traces, as the relay's polls do
        async with runtime.sessions() as session:
            rows = (await session.execute(statement)).all()
    now = datetime.now(UTC)
    for target, count, oldest in rows:
        OUTBOX_EVENTS.labels(target).set(count)
        OUTBOX_AGE.labels(target).set((now - oldest).total_seconds() if oldest is not None else 0)


async def collect_dead_letters(runtime: Runtime) -> None:
    consumers = [name for name, t in runtime.targets.items() if t.consumes]
    if not consumers or runtime.bus is None:
        return
    for target, depth in (await runtime.bus.dead_letter_depths(consumers)).items():
        DEAD_LETTERS.labels(target).set(depth)


async def collect(runtime: Runtime) -> None:
    """Refresh the gauges read at scrape time; a source that fails keeps its last values."""
    hooks = [t.metrics(runtime) for t in runtime.targets.values() if t.metrics is not None]
    results = await asyncio.gather(
        collect_outboxes(runtime), collect_dead_letters(runtime), *hooks, return_exceptions=True
    )
    for result in results:
        if isinstance(result, Exception):
            log.warning(
                "a metrics source failed; its gauges keep their last values", extra={"error": repr(result)}
            )


def metrics_app(runtime: Runtime) -> Starlette:
    """`/metrics` of the process's one registry (every target it serves, labelled by target)."""

    async def metrics(request: Request) -> Response:
        await collect(runtime)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), media_type=content_type)

    return Starlette(routes=[Route("/metrics", metrics)])
