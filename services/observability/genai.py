"""GenAI metrics from ai's `ai.request.completed` events: tokens, duration and time to first token by
model, per org (the OpenTelemetry GenAI semantic conventions' client metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.observability.models import GenAiCall
from coder.shared.contracts.ai import AiRequestCompleted
from coder.shared.events import CloudEvent, EventContext
from coder.shared.repository import owned_by

_COLUMNS = (
    "org_id",
    "event_id",
    "model",
    "provider",
    "input_tokens",
    "output_tokens",
    "duration_ms",
    "ttft_ms",
    "stream",
    "outcome",
    "at",
)
# A batch's rows as one array per column: one statement, the same SQL text (one prepared statement)
# whatever the batch's size, built once.
_calls = GenAiCall.__table__
assert isinstance(_calls, Table)
_rows = (
    func.unnest(*(bindparam(c, type_=ARRAY(_calls.c[c].type)) for c in _COLUMNS))
    .table_valued(*_COLUMNS)
    .render_derived()
)
_INSERT = (
    insert(_calls)
    .from_select(list(_COLUMNS), select(*(_rows.c[c] for c in _COLUMNS)))
    .on_conflict_do_nothing()
)


async def on_ai_requests_completed(events: Sequence[CloudEvent], context: EventContext) -> None:
    """Keep one row per model call (the event id makes a redelivery a no-op), a delivery batch in one
    statement. Malformed events raise (the batch is handled again event by event) and end in the
    dead-letter queue."""
    rows = []
    for event in events:
        if not event.orgid:
            raise ValueError(f"event {event.id} has no orgid")
        data = event.data_as(AiRequestCompleted)
        rows.append(
            (
                event.orgid,
                event.id,
                data.model or "unknown",
                data.provider,
                data.prompt_tokens,
                data.completion_tokens,
                data.latency_ms,
                data.ttft_ms,
                data.stream,
                data.outcome,
                event.time,
            )
        )
    if rows:
        columns = zip(*rows, strict=True)
        await context.session.execute(_INSERT, dict(zip(_COLUMNS, map(list, columns), strict=True)))


def _quantiles(column: Any, name: str) -> list[Any]:
    return [
        func.avg(column).label(f"{name}_avg"),
        func.percentile_cont(0.5).within_group(column).label(f"{name}_p50"),
        func.percentile_cont(0.95).within_group(column).label(f"{name}_p95"),
    ]


async def by_model(
    session: AsyncSession, org_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    query = (
        select(
            GenAiCall.model,
            func.count().label("calls"),
            func.count().filter(GenAiCall.stream.is_(True)).label("streamed"),
            func.count()
            .filter(GenAiCall.outcome.is_not(None) & (GenAiCall.outcome != "completed"))
            .label("incomplete"),
            func.sum(GenAiCall.input_tokens).label("input_tokens"),
            func.sum(GenAiCall.output_tokens).label("output_tokens"),
            *_quantiles(GenAiCall.duration_ms, "duration"),
            *_quantiles(GenAiCall.ttft_ms, "ttft"),
        )
        .where(owned_by(GenAiCall, org_id), GenAiCall.at >= start, GenAiCall.at < end)
        .group_by(GenAiCall.model)
        .order_by(GenAiCall.model)
    )
    out = []
    for row in (await session.execute(query)).mappings():

        def ms(name: str, r: Any = row) -> dict[str, float | None]:
            return {
                q: None if r[f"{name}_{q}"] is None else round(float(r[f"{name}_{q}"]), 3)
                for q in ("avg", "p50", "p95")
            }

        out.append(
            {
                "model": row["model"],
                "calls": row["calls"],
                "streamed": row["streamed"],
                "incomplete": row["incomplete"],
                "input_tokens": int(row["input_tokens"] or 0),
                "output_tokens": int(row["output_tokens"] or 0),
                "duration_ms": ms("duration"),
                "time_to_first_token_ms": ms("ttft"),
            }
        )
    return out
