"""HTTP routes of `logging` (Grafana Loki style). Paths are relative to `/api/logging` at the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, WebSocket, status
from starlette.websockets import WebSocketDisconnect

from coder.services.logging import service
from coder.services.logging.config import LoggingSettings
from coder.services.logging.schemas import (
    DeleteRead,
    DeleteRequest,
    Direction,
    LabelsRead,
    Level,
    PushRead,
    PushRequest,
    QueryPage,
    RetentionRead,
    RetentionUpdate,
)
from coder.services.logging.selector import LogQuery, parse
from coder.shared.auth import Principal, require, websocket_principal
from coder.shared.db import SessionDep
from coder.shared.deps import settings_of
from coder.shared.errors import InvalidField, NotFound, Problem, problem_responses
from coder.shared.pagination import PageDep, PageParams
from coder.shared.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["logging"])
log = logging.getLogger(__name__)

SettingsDep = Annotated[LoggingSettings, Depends(settings_of(LoggingSettings))]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_RANGE_NS = 3600 * service.NS  # Loki's default: the last hour
TimeParam = Annotated[
    str | None,
    Query(max_length=40, description="Nanoseconds since the epoch, or RFC 3339 (e.g. 2026-01-02T03:04:05Z)"),
]
QueryParam = Annotated[
    str,
    Query(
        min_length=2,
        max_length=4096,
        description="LogQL: a stream selector and line filters, "
        'e.g. {app="api", env=~"prod|stage"} |= "timeout"',
    ),
]


def parse_time(value: str | None, field: str, default: int) -> int:
    if value is None or value == "":
        return default
    if value.isdigit():
        if len(value) > 19 or int(value) >= 2**63:
            raise InvalidField(field, "must be below 2^63 nanoseconds")
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError
        return (moment - EPOCH) // timedelta(microseconds=1) * 1000
    except (ValueError, OverflowError):
        raise InvalidField(field, "nanoseconds since the epoch or an RFC 3339 time with its offset") from None


def time_range(start: str | None, end: str | None) -> tuple[int, int]:
    end_ns = parse_time(end, "query.end", service.now_ns())
    start_ns = parse_time(start, "query.start", max(0, end_ns - DEFAULT_RANGE_NS))
    if start_ns > end_ns:
        raise InvalidField("query.start", "must not be after end")
    return start_ns, end_ns


@router.post("/push", response_model=PushRead, responses=problem_responses({429}))
async def push(
    body: PushRequest,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("logging:push")],
) -> PushRead:
    """Push log lines in Loki's JSON shape: streams of `[timestamp_ns, line, {metadata}]` under a few
    low-cardinality labels. Tokens, keys, passwords, e-mail addresses and the values stored in
    `secrets` are redacted before anything is stored; `trace_id` and `request_id` in the metadata
    link a line to its trace and request. A new label set beyond the org's stream limit is a 429."""
    return await service.push(session, principal.org_id, body, settings)


@router.get("/query", response_model=QueryPage)
async def query(
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("logging:read")],
    params: PageDep,
    query: QueryParam = "{}",
    start: TimeParam = None,
    end: TimeParam = None,
    direction: Direction = Direction.BACKWARD,
    level: Annotated[list[Level] | None, Query(max_length=len(Level))] = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
) -> QueryPage:
    """Lines of the streams the selector matches, in `[start, end)` (default: the last hour), passing
    every line filter, of the given levels, trace or request; newest first unless `direction=forward`.
    Keyset pages: pass `next_cursor` back as `cursor`."""
    start_ns, end_ns = time_range(start, end)
    return await service.query_lines(
        session,
        principal.org_id,
        parse(query),
        settings,
        params,
        start=start_ns,
        end=end_ns,
        direction=direction,
        levels=level or [],
        trace_id=trace_id,
        request_id=request_id,
    )


@router.get("/labels", response_model=LabelsRead)
async def labels(
    session: SessionDep,
    principal: Annotated[Principal, require("logging:read")],
    start: TimeParam = None,
    end: TimeParam = None,
) -> LabelsRead:
    """The label names of the org's streams with lines in `[start, end)` (default: the last hour).
    Labels are few by construction (at most LOGGING_MAX_LABELS per stream), so this is one list."""
    start_ns, end_ns = time_range(start, end)
    return LabelsRead(data=await service.label_names(session, principal.org_id, start_ns, end_ns))


@router.get("/label/{name}/values", response_model=LabelsRead, responses=problem_responses({404}))
async def label_values(
    name: Annotated[str, Path(max_length=1024)],
    session: SessionDep,
    principal: Annotated[Principal, require("logging:read")],
    start: TimeParam = None,
    end: TimeParam = None,
) -> LabelsRead:
    """The values label `name` takes in the org's streams with lines in `[start, end)`; 404 when none
    of them has it."""
    start_ns, end_ns = time_range(start, end)
    values = await service.label_values(session, principal.org_id, name, start_ns, end_ns)
    if not values:
        raise NotFound(f"no stream has label {name} in this time range")
    return LabelsRead(data=values)


@router.post("/delete", response_model=DeleteRead)
async def delete_lines(
    body: DeleteRequest,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, require("logging:admin")],
) -> DeleteRead:
    """Delete the org's lines the query selects (stream selector and optional line filters) in
    `[start, end)`, for good."""
    selection = parse(body.query, "query")
    start = int(body.start) if body.start is not None else 0
    end = int(body.end) if body.end is not None else service.now_ns()
    if start > end:
        raise InvalidField("start", "must not be after end")
    return await service.delete_lines(session, principal.org_id, selection, settings, start, end)


@router.get("/retention", response_model=RetentionRead)
async def read_retention(
    session: SessionDep, settings: SettingsDep, principal: Annotated[Principal, require("logging:read")]
) -> RetentionRead:
    """How many days the org's lines are kept."""
    return await service.get_retention(session, principal.org_id, settings)


@router.put("/retention", response_model=RetentionRead)
async def set_retention(
    body: RetentionUpdate, session: SessionDep, principal: Annotated[Principal, require("logging:admin")]
) -> RetentionRead:
    """Keep the org's lines `days` days; older ones are deleted by the next retention sweep."""
    return await service.set_retention(session, principal.org_id, body.days)


@router.delete("/retention", status_code=status.HTTP_204_NO_CONTENT)
async def reset_retention(
    session: SessionDep, principal: Annotated[Principal, require("logging:admin")]
) -> Response:
    """Go back to the platform's default retention."""
    await service.reset_retention(session, principal.org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- live tail ---

TAIL_BATCH = 500
CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN, CLOSE_INVALID = 4401, 4403, 4422


@router.websocket("/tail")
async def tail(websocket: WebSocket) -> None:
    """Live tail: `?query=<LogQL>&limit=<n>&start=<time>`. Sends the last `limit` lines since `start`
    (default 0 lines), then every new line the query selects as it is stored, as JSON messages
    `{"lines": [...]}` (the items of /v1/query). Refusals close with 4401, 4403 or 4422."""
    # A WebSocket route gets no Request, so the runtime is read from the app here.
    runtime: Runtime = websocket.app.state.runtime
    settings = runtime.config(LoggingSettings)
    try:
        principal = await websocket_principal(websocket, "logging:read")
        params = websocket.query_params
        selection: LogQuery = parse(params.get("query", ""))
        raw_limit = params.get("limit", "0")
        if not raw_limit.isdigit() or int(raw_limit) > 1000:
            raise InvalidField("query.limit", "an integer from 0 to 1000")
        start_ns, end_ns = time_range(params.get("start"), None)
    except Problem as problem:
        # Accepted first, so the client reads why in the close frame (a close before the handshake
        # completes is a bare HTTP 403).
        await websocket.accept()
        code = {401: CLOSE_UNAUTHORIZED, 403: CLOSE_FORBIDDEN}.get(problem.status, CLOSE_INVALID)
        await websocket.close(code=code, reason=(problem.detail or problem.title)[:120])
        return
    await websocket.accept()
    async with runtime.sessions() as session:
        after = await service.last_line_id(session)
        if int(raw_limit):
            backlog = await service.query_lines(
                session,
                principal.org_id,
                selection,
                settings,
                PageParams(limit=int(raw_limit), after=None),
                start=start_ns,
                end=end_ns + 1,
                direction=Direction.BACKWARD,
                levels=[],
                trace_id=None,
                request_id=None,
            )
            if backlog.items:
                lines = list(reversed(backlog.items))
                await websocket.send_json({"lines": [line.model_dump(mode="json") for line in lines]})
    received = asyncio.create_task(websocket.receive())
    try:
        while True:
            async with runtime.sessions() as session:
                found = await service.tail_lines(session, principal.org_id, selection, after, TAIL_BATCH)
            if found:
                after = found[-1][0]
                await websocket.send_json({"lines": [line.model_dump(mode="json") for _, line in found]})
                if len(found) == TAIL_BATCH:
                    continue  # more are waiting: no pause
            done, _ = await asyncio.wait({received}, timeout=settings.tail_poll_seconds)
            if done:
                if received.result()["type"] == "websocket.disconnect":
                    return
                received = asyncio.create_task(websocket.receive())  # client messages are ignored
    except WebSocketDisconnect:
        return
    finally:
        received.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await received
