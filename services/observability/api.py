"""HTTP routes of `observability` (Prometheus, OpenTelemetry). Paths are relative to
`/api/observability` at the gateway.

Platform health (the poller's scrapes) is platform-wide: `observability:platform`, an admin action,
reads it. SLOs and alert rules are each org's own, on the platform's targets. Traces and GenAI
metrics are per org: each org sends its own spans, ai's events name the org of each call."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import AwareDatetime
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.exc import IntegrityError

from coder.services.observability import genai, traces
from coder.services.observability import slo as slos
from coder.services.observability.alerts import BURN_RATE, FIRING, INACTIVE, PENDING
from coder.services.observability.config import ObservabilitySettings
from coder.services.observability.models import PLATFORM, AlertRule, AlertTransition, Scrape, Slo
from coder.services.observability.schemas import (
    AlertRuleCreate,
    AlertRuleRead,
    GenAiMetrics,
    Health,
    ModelMetrics,
    ServiceMap,
    SloCreate,
    SloRead,
    SloStatus,
    TargetHealth,
    TransitionRead,
)
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import RuntimeDep, settings_of
from coder.shared.errors import Conflict, InvalidField, Problem, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import OrgScoped, owned_by, scoped
from coder.shared.schemas import StorableTime

router = APIRouter(prefix="/v1", tags=["observability"])

Platform = Annotated[Principal, require("observability:platform")]
Admin = Annotated[Principal, require("observability:admin")]
Reader = Annotated[Principal, require("observability:read")]
SettingsDep = Annotated[ObservabilitySettings, Depends(settings_of(ObservabilitySettings))]
From = Annotated[AwareDatetime | None, StorableTime, Query(alias="from", description="Default: an hour ago")]
To = Annotated[AwareDatetime | None, StorableTime, Query(description="Exclusive; default now")]
MAX_TRACE_BODY = 16 * 1024 * 1024


def _range(start: datetime | None, end: datetime | None, default: timedelta) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    start = start or end - default
    if start >= end:
        raise InvalidField("query.from", "must be before `to`")
    return start, end


# --- platform health ---


@router.get("/health", response_model=Health)
async def health(session: SessionDep, runtime: RuntimeDep, principal: Platform) -> Health:
    """Each of the platform's targets as the last poll found it: ready or not (and why), with its
    request and 5xx counters as its /metrics said."""
    names = sorted(runtime.service_urls)
    latest = (
        select(Scrape)
        .where(owned_by(Scrape, PLATFORM), Scrape.target.in_(names))
        .order_by(Scrape.target, Scrape.at.desc(), Scrape.id.desc())
        .ext(distinct_on(Scrape.target))
    )
    found = {row.target: row for row in (await session.scalars(latest)).all()}
    targets = []
    for name in names:
        row = found.get(name)
        targets.append(
            TargetHealth(
                target=name,
                up=None if row is None else row.up,
                ready_status=None if row is None else row.ready_status,
                error=None if row is None else row.error,
                scraped_at=None if row is None else row.at,
                requests_total=None if row is None or not row.up else sum(row.requests.values()),
                errors_total=None
                if row is None or not row.up
                else sum(v for k, v in row.requests.items() if k.startswith("5")),
            )
        )
    known = [t.up for t in targets if t.up is not None]
    state = "unknown" if not known else "ok" if all(known) and len(known) == len(targets) else "degraded"
    return Health(status=state, targets=targets)


# --- SLOs ---


async def _status(session: SessionDep, objective: Slo, start: datetime, end: datetime) -> SloStatus:
    c = await slos.slo_counts(session, objective, start, end)
    budget = 1.0 - objective.objective
    burn = {
        name: await slos.burn_rate_over(session, objective, seconds, end)
        for name, seconds in slos.BURN_WINDOWS.items()
    }
    return SloStatus(
        start=start,
        end=end,
        total=c.total,
        good=c.good,
        bad=c.bad,
        errors_5xx=c.errors,
        sli=c.good / c.total if c.total > 0 else None,
        error_budget=budget,
        error_budget_remaining=1.0 - slos.error_ratio(c) / budget,
        burn_rates=burn,
        scrapes=c.scrapes,
    )


async def _slo_read(
    session: SessionDep, row: Slo, start: datetime | None = None, end: datetime | None = None
) -> SloRead:
    end = end or datetime.now(UTC)
    start = start or end - timedelta(seconds=row.window_seconds)
    return SloRead(
        id=row.id,
        name=row.name,
        target=row.target,
        kind=row.kind,
        objective=row.objective,
        window_seconds=row.window_seconds,
        threshold_seconds=row.threshold_seconds,
        created_at=row.created_at,
        status=await _status(session, row, start, end),
    )


@router.post(
    "/slos", response_model=SloRead, status_code=status.HTTP_201_CREATED, responses=problem_responses({409})
)
async def create_slo(
    body: SloCreate, session: SessionDep, runtime: RuntimeDep, settings: SettingsDep, principal: Admin
) -> SloRead:
    """An objective on one of the platform's targets: availability (answers that are not 5xx) or
    latency (answers within `threshold_seconds`, a bucket of its latency histogram), over a rolling
    window. Its status is computed from the poller's scrapes of the target's /metrics."""
    if body.target not in runtime.service_urls:
        raise InvalidField("target", f"no target {body.target} on this platform")
    if body.window_seconds > settings.retention_days * 86400:
        raise InvalidField("window_seconds", f"at most the retention, {settings.retention_days} days")
    now = datetime.now(UTC)
    row = Slo(
        org_id=principal.org_id,
        name=body.name,
        target=body.target,
        kind=body.kind.value,
        objective=body.objective,
        window_seconds=body.window_seconds,
        threshold_seconds=body.threshold_seconds,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"an SLO named {body.name!r} exists") from None
    return await _slo_read(session, row)


@router.get("/slos", response_model=Page[SloRead])
async def list_slos(session: SessionDep, principal: Platform, params: PageDep) -> Page[SloRead]:
    """The organization's SLOs with their status over their window: good and total requests, error
    budget remaining and burn rates over 5m, 30m, 1h and 6h."""
    rows = await paginate(session, scoped(Slo, principal.org_id), (Slo.created_at, Slo.id), params)
    return Page[SloRead](
        items=[await _slo_read(session, row) for row in rows.items], next_cursor=rows.next_cursor
    )


@router.get("/slos/{slo_id}", response_model=SloRead)
async def get_slo(
    slo_id: uuid.UUID, session: SessionDep, principal: Platform, from_: From = None, to: To = None
) -> SloRead:
    """One SLO with its status over its window ending now, or over [`from`, `to`] when given (a
    report: the requests counted are the increase of the target's counters between the polls)."""
    row = await OrgScoped(Slo, session, principal.org_id, "SLO").get(slo_id, Slo.id == slo_id)
    if from_ is None and to is None:
        return await _slo_read(session, row)
    end = to or datetime.now(UTC)
    start, end = _range(from_, end, timedelta(seconds=row.window_seconds))
    return await _slo_read(session, row, start, end)


@router.delete("/slos/{slo_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_slo(slo_id: uuid.UUID, session: SessionDep, principal: Admin) -> Response:
    """Delete an SLO and the burn-rate rules on it (their history too)."""
    row = await OrgScoped(Slo, session, principal.org_id, "SLO").get(slo_id, Slo.id == slo_id)
    rules = select(AlertRule.id).where(owned_by(AlertRule, principal.org_id), AlertRule.slo_id == row.id)
    await session.execute(delete(AlertTransition).where(AlertTransition.rule_id.in_(rules)))
    await session.execute(delete(AlertRule).where(AlertRule.id.in_(rules)))
    await session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- alert rules ---


def _rule_read(row: AlertRule) -> AlertRuleRead:
    return AlertRuleRead.model_validate(row, from_attributes=True)


@router.post(
    "/alert-rules",
    response_model=AlertRuleRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_alert_rule(
    body: AlertRuleCreate, session: SessionDep, runtime: RuntimeDep, principal: Admin
) -> AlertRuleRead:
    """A burn-rate rule on one of the org's SLOs (fires when the SLO's error budget burns faster
    than `factor` over both windows, e.g. 14.4 over 1h and 5m) or a threshold on a target's metric
    (`up`, `error_ratio`, `request_rate` over `window_seconds`). Either must hold for `for_seconds`
    (pending meanwhile) before it fires; evaluated after each poll."""
    burn = body.kind.value == BURN_RATE
    if burn:
        if await OrgScoped(Slo, session, principal.org_id, "SLO").find(Slo.id == body.slo_id) is None:
            raise InvalidField("slo_id", f"no SLO {body.slo_id} in this organization")
    elif body.target not in runtime.service_urls:
        raise InvalidField("target", f"no target {body.target} on this platform")
    row = AlertRule(
        org_id=principal.org_id,
        name=body.name,
        kind=body.kind.value,
        for_seconds=body.for_seconds,
        slo_id=body.slo_id if burn else None,
        factor=body.factor if burn else None,
        long_window_seconds=body.long_window_seconds if burn else None,
        short_window_seconds=body.short_window_seconds if burn else None,
        target=None if burn else body.target,
        metric=None if burn else body.metric,
        comparison=None if burn else body.comparison,
        threshold=None if burn else body.threshold,
        window_seconds=None if burn else body.window_seconds,
        state=INACTIVE,
        created_at=datetime.now(UTC),
    )
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"an alert rule named {body.name!r} exists") from None
    return _rule_read(row)


@router.get("/alert-rules", response_model=Page[AlertRuleRead])
async def list_alert_rules(session: SessionDep, principal: Platform, params: PageDep) -> Page[AlertRuleRead]:
    """The organization's alert rules with their state, oldest first."""
    rows = await paginate(
        session, scoped(AlertRule, principal.org_id), (AlertRule.created_at, AlertRule.id), params
    )
    return Page[AlertRuleRead](items=[_rule_read(r) for r in rows.items], next_cursor=rows.next_cursor)


@router.get("/alert-rules/{rule_id}", response_model=AlertRuleRead)
async def get_alert_rule(rule_id: uuid.UUID, session: SessionDep, principal: Platform) -> AlertRuleRead:
    row = await OrgScoped(AlertRule, session, principal.org_id, "alert rule").get(
        rule_id, AlertRule.id == rule_id
    )
    return _rule_read(row)


@router.delete("/alert-rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alert_rule(rule_id: uuid.UUID, session: SessionDep, principal: Admin) -> Response:
    """Delete a rule and its history."""
    row = await OrgScoped(AlertRule, session, principal.org_id, "alert rule").get(
        rule_id, AlertRule.id == rule_id
    )
    await session.execute(delete(AlertTransition).where(AlertTransition.rule_id == row.id))
    await session.delete(row)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alert-rules/{rule_id}/history", response_model=Page[TransitionRead])
async def alert_history(
    rule_id: uuid.UUID, session: SessionDep, principal: Platform, params: PageDep
) -> Page[TransitionRead]:
    """The rule's changes of state, newest first."""
    query = scoped(AlertTransition, principal.org_id).where(AlertTransition.rule_id == rule_id)
    # The page first: a forged cursor is a 400 whatever the rule.
    rows = await paginate(session, query, (AlertTransition.id,), params, descending=True)
    await OrgScoped(AlertRule, session, principal.org_id, "alert rule").get(rule_id, AlertRule.id == rule_id)
    return Page[TransitionRead](
        items=[TransitionRead.model_validate(r, from_attributes=True) for r in rows.items],
        next_cursor=rows.next_cursor,
    )


@router.get("/alerts", response_model=list[AlertRuleRead])
async def alerts(session: SessionDep, principal: Platform) -> list[AlertRuleRead]:
    """The organization's alerts now: its rules that are firing, then those pending."""
    query = scoped(AlertRule, principal.org_id).where(AlertRule.state.in_((FIRING, PENDING)))
    rows = (await session.scalars(query.order_by(AlertRule.state, AlertRule.state_changed_at))).all()
    return [_rule_read(r) for r in rows]


# --- traces and the service map ---


@router.post(
    "/traces",
    responses={
        200: {
            "content": {traces.PROTOBUF: {}, traces.JSON: {}},
            "description": "OTLP ExportTraceServiceResponse",
        },
        **problem_responses({413, 415}),
    },
)
async def ingest_traces(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("observability:ingest")],
) -> Response:
    """OTLP/HTTP trace export (the path OpenTelemetry exporters post to): an ExportTraceServiceRequest
    as `application/x-protobuf` or `application/json`, optionally gzip. The spans are the caller's
    org's; the service map is built from them."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TRACE_BODY:
            raise Problem(f"the body is larger than {MAX_TRACE_BODY} bytes", status=413)
        chunks.append(chunk)
    body = traces.decompress(b"".join(chunks), request.headers.get("content-encoding"), MAX_TRACE_BODY)
    content_type = request.headers.get("content-type", "")
    export = traces.decode(body, content_type)
    rows = list(traces.spans(export, principal.org_id, datetime.now(UTC)))
    if len(rows) > settings.max_spans_per_request:
        raise Problem(f"at most {settings.max_spans_per_request} spans per request", status=413)
    session.add_all(rows)
    answer = ExportTraceServiceResponse()
    if content_type.split(";", 1)[0].strip().lower() == traces.JSON:
        return Response(b"{}", media_type=traces.JSON)
    return Response(answer.SerializeToString(), media_type=traces.PROTOBUF)


@router.get("/service-map", response_model=ServiceMap)
async def service_map(
    session: SessionDep, principal: Reader, from_: From = None, to: To = None
) -> ServiceMap:
    """Which service calls which, from the org's spans in the range (default: the last hour): calls,
    errors and latency (ms) per edge."""
    start, end = _range(from_, to, timedelta(hours=1))
    nodes, edges = await traces.service_map(session, principal.org_id, start, end)
    return ServiceMap.model_validate({"start": start, "end": end, "nodes": nodes, "edges": edges})


# --- GenAI ---


@router.get("/genai", response_model=GenAiMetrics)
async def genai_metrics(
    session: SessionDep, principal: Reader, from_: From = None, to: To = None
) -> GenAiMetrics:
    """The org's model calls through ai in the range (default: the last hour), by model: calls, input
    and output tokens, duration and time to first token (avg, p50, p95, ms)."""
    start, end = _range(from_, to, timedelta(hours=1))
    models = await genai.by_model(session, principal.org_id, start, end)
    return GenAiMetrics(start=start, end=end, models=[ModelMetrics.model_validate(m) for m in models])
