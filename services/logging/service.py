"""The logging domain: ingest (limits, redaction, COPY), queries, label discovery, deletion and
retention. Functions take the org from the caller's token and only flush; the request commits."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.logging.config import LoggingSettings
from coder.services.logging.models import Line, Retention, SecretFingerprint, Stream
from coder.services.logging.redaction import Fingerprints, Redactor
from coder.services.logging.schemas import (
    DeleteRead,
    Direction,
    Level,
    LineRead,
    PushRead,
    PushRequest,
    QueryPage,
    RetentionRead,
)
from coder.services.logging.selector import LABEL_NAME, LogQuery
from coder.shared.errors import InvalidField, Problem
from coder.shared.pagination import PageParams, paginate
from coder.shared.repository import owned_by, scoped

NS = 1_000_000_000
LINE_COLUMNS = ("org_id", "stream_id", "ts", "level", "line", "metadata", "trace_id", "request_id")
# Metadata keys whose value links a line to its trace and its request (queried by index).
TRACE_KEYS, REQUEST_KEYS = ("trace_id", "traceid", "traceId"), ("request_id", "requestid", "requestId")
_LEVELS = {
    "trace": Level.TRACE,
    "debug": Level.DEBUG,
    "dbg": Level.DEBUG,
    "info": Level.INFO,
    "information": Level.INFO,
    "notice": Level.INFO,
    "warn": Level.WARN,
    "warning": Level.WARN,
    "error": Level.ERROR,
    "err": Level.ERROR,
    "fatal": Level.FATAL,
    "critical": Level.FATAL,
    "crit": Level.FATAL,
    "panic": Level.FATAL,
}
_LEVEL_IN_LINE = re.compile(
    r"""(?ix)(?:"(?:level|severity|lvl)"\s*:\s*"|\b(?:level|severity|lvl)=["']?|^\s*\[?)
    (trace|debug|dbg|info|information|notice|warn|warning|error|err|fatal|critical|crit|panic)\b"""
)


class StreamLimit(Problem):
    status, slug, title = 429, "stream-limit", "Too many streams"


class QueryFailed(Problem):
    status, slug, title = 422, "query-failed", "Query refused"


def now_ns() -> int:
    return time.time_ns()


def detect_level(labels: dict[str, str], metadata: dict[str, str], line: str) -> Level:
    """The line's level as Loki's `detected_level`: metadata, then labels, then the line itself."""
    for source in (metadata, labels):
        for key in ("level", "severity", "detected_level", "lvl"):
            if key in source:
                return _LEVELS.get(source[key].strip().lower(), Level.UNKNOWN)
    match = _LEVEL_IN_LINE.search(line[:2048])
    return _LEVELS[match.group(1).lower()] if match else Level.UNKNOWN


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key)
        if value:
            return value[:64]
    return None


def _digest(labels: dict[str, str]) -> bytes:
    return hashlib.sha256(json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()).digest()


def _check_labels(labels: dict[str, str], at: str, settings: LoggingSettings) -> None:
    if len(labels) > settings.max_labels:
        raise InvalidField(at, f"at most {settings.max_labels} labels per stream (keep labels few)")
    for name, value in labels.items():
        if len(name) > settings.max_label_name_length or not LABEL_NAME.fullmatch(name):
            raise InvalidField(
                f"{at}.{name}",
                "a label name is [A-Za-z_][A-Za-z0-9_]* of at most "
                f"{settings.max_label_name_length} characters",
            )
        if len(value) > settings.max_label_value_length:
            raise InvalidField(f"{at}.{name}", f"longer than {settings.max_label_value_length} characters")


async def load_fingerprints(session: AsyncSession, org_id: str) -> Fingerprints:
    rows = (
        await session.execute(
            select(SecretFingerprint.digest, SecretFingerprint.length).where(
                owned_by(SecretFingerprint, org_id)
            )
        )
    ).all()
    return Fingerprints(org_id, {row[0] for row in rows}, {row[1] for row in rows})


async def store_fingerprints(session: AsyncSession, org_id: str, found: list[tuple[bytes, int]]) -> None:
    if found:
        await session.execute(
            insert(SecretFingerprint)
            .values([{"org_id": org_id, "digest": d, "length": n} for d, n in found])
            .on_conflict_do_nothing()
        )


@dataclass
class _Batch:
    labels: dict[str, str]
    rows: list[tuple[int, str, str, dict[str, str], str | None, str | None]]


async def push(session: AsyncSession, org_id: str, body: PushRequest, settings: LoggingSettings) -> PushRead:
    """Store the pushed lines, redacted, under their streams (created on first use)."""
    redactor = Redactor(await load_fingerprints(session, org_id))
    batches: dict[bytes, _Batch] = {}
    for s, stream in enumerate(body.streams):
        _check_labels(stream.stream, f"streams.{s}.stream", settings)
        labels = {name: redactor.redact(value) for name, value in stream.stream.items()}
        batch = batches.setdefault(_digest(labels), _Batch(labels, []))
        for v, value in enumerate(stream.values):
            ts, line, metadata = int(value[0]), value[1], dict(value[2])
            if ts >= 2**63:
                raise InvalidField(f"streams.{s}.values.{v}.0", "must be below 2^63 nanoseconds")
            if len(line.encode()) > settings.max_line_bytes:
                raise InvalidField(
                    f"streams.{s}.values.{v}.1", f"longer than {settings.max_line_bytes} bytes"
                )
            for key in metadata:
                if not LABEL_NAME.fullmatch(key) or len(key) > settings.max_label_name_length:
                    raise InvalidField(f"streams.{s}.values.{v}.2.{key}", "a metadata key is a label name")
            level = detect_level(labels, metadata, line)
            metadata = {key: redactor.redact(item) for key, item in metadata.items()}
            batch.rows.append(
                (
                    ts,
                    level.value,
                    redactor.redact(line),
                    metadata,
                    _first(metadata, TRACE_KEYS),
                    _first(metadata, REQUEST_KEYS),
                )
            )
    ids = await _stream_ids(session, org_id, batches, settings)
    records = [
        (org_id, ids[digest], ts, level, line, json.dumps(metadata), trace_id, request_id)
        for digest, batch in batches.items()
        for ts, level, line, metadata, trace_id, request_id in batch.rows
    ]
    # COPY, not row-by-row INSERTs: the request's own connection and transaction, binary protocol.
    connection = await (await session.connection()).get_raw_connection()
    driver: Any = connection.driver_connection
    await driver.copy_records_to_table(Line.__tablename__, records=records, columns=LINE_COLUMNS)
    return PushRead(accepted=len(records), streams=len(batches), redacted=redactor.counts)


async def _stream_ids(
    session: AsyncSession, org_id: str, batches: dict[bytes, _Batch], settings: LoggingSettings
) -> dict[bytes, int]:
    """Each batch's stream id, its stream created if new (within the org's stream limit), and its
    time span widened to the batch's lines."""
    digests = list(batches)
    found = dict(
        (
            await session.execute(
                select(Stream.digest, Stream.id).where(owned_by(Stream, org_id), Stream.digest.in_(digests))
            )
        ).all()
    )
    missing = [d for d in digests if d not in found]
    if missing:
        count = (
            await session.execute(select(func.count()).select_from(Stream).where(owned_by(Stream, org_id)))
        ).scalar_one()
        if count + len(missing) > settings.max_streams_per_org:
            raise StreamLimit(
                f"this push would make {count + len(missing)} streams, over the limit of "
                f"{settings.max_streams_per_org}: move high-cardinality values (ids) from labels to "
                "structured metadata",
                errors=[{"field": "streams", "message": "stream limit exceeded"}],
            )
        await session.execute(
            insert(Stream)
            .values(
                [
                    {
                        "org_id": org_id,
                        "digest": d,
                        "labels": batches[d].labels,
                        "first_ts": min(r[0] for r in batches[d].rows),
                        "last_ts": max(r[0] for r in batches[d].rows),
                    }
                    for d in missing
                ]
            )
            .on_conflict_do_nothing()
        )
        found.update(
            (
                await session.execute(
                    select(Stream.digest, Stream.id).where(
                        owned_by(Stream, org_id), Stream.digest.in_(missing)
                    )
                )
            ).all()
        )
    for digest, batch in batches.items():
        low, high = min(r[0] for r in batch.rows), max(r[0] for r in batch.rows)
        await session.execute(
            update(Stream)
            .where(owned_by(Stream, org_id), Stream.id == found[digest])
            .where((Stream.first_ts > low) | (Stream.last_ts < high))
            .values(first_ts=func.least(Stream.first_ts, low), last_ts=func.greatest(Stream.last_ts, high))
        )
    return found


async def _streams(
    session: AsyncSession, org_id: str, query: LogQuery, start: int, end: int
) -> dict[int, dict[str, str]]:
    rows = await session.execute(
        select(Stream.id, Stream.labels).where(
            owned_by(Stream, org_id),
            Stream.last_ts >= start,
            Stream.first_ts < end,
            *query.stream_conditions(),
        )
    )
    return dict(rows.all())


async def _guarded(session: AsyncSession, settings: LoggingSettings, statement: Any) -> Any:
    """Run a query that may carry user regexes under the statement timeout; PostgreSQL's refusal of a
    regex or the timeout is a 422 naming the query, not a 500."""
    await session.execute(text(f"SET LOCAL statement_timeout = {int(settings.query_timeout_seconds * 1000)}"))
    try:
        return await statement
    except DBAPIError as exc:
        message = str(exc.orig).lower()
        if "regular expression" in message:
            raise QueryFailed(
                "a regular expression PostgreSQL cannot run",
                errors=[{"field": "query.query", "message": "invalid regular expression"}],
            ) from None
        if "statement timeout" in message or "canceling statement" in message:
            raise QueryFailed(
                f"the query ran longer than {settings.query_timeout_seconds:g}s: "
                "narrow the selector or the time range",
                errors=[{"field": "query.query", "message": "too slow"}],
            ) from None
        raise


def _line_read(line: Line, labels: dict[str, str]) -> LineRead:
    return LineRead(
        ts=str(line.ts),
        labels=labels,
        line=line.line,
        level=Level(line.level),
        metadata=line.meta,
        trace_id=line.trace_id,
        request_id=line.request_id,
    )


async def query_lines(
    session: AsyncSession,
    org_id: str,
    query: LogQuery,
    settings: LoggingSettings,
    params: PageParams,
    *,
    start: int,
    end: int,
    direction: Direction,
    levels: list[Level],
    trace_id: str | None,
    request_id: str | None,
) -> QueryPage:
    # No early answer when no stream matches: the cursor is still checked (paginate decodes it).
    streams = await _guarded(session, settings, _streams(session, org_id, query, start, end))
    conditions: list[ColumnElement[bool]] = [
        Line.stream_id.in_(list(streams)),
        Line.ts >= start,
        Line.ts < end,
        *query.line_conditions(),
    ]
    if levels:
        conditions.append(Line.level.in_([level.value for level in levels]))
    if trace_id:
        conditions.append(Line.trace_id == trace_id)
    if request_id:
        conditions.append(Line.request_id == request_id)
    rows = await _guarded(
        session,
        settings,
        paginate(
            session,
            scoped(Line, org_id).where(*conditions),
            (Line.ts, Line.id),
            params,
            descending=direction is Direction.BACKWARD,
        ),
    )
    return QueryPage(
        items=[_line_read(line, streams[line.stream_id]) for line in rows.items], next_cursor=rows.next_cursor
    )


async def tail_lines(
    session: AsyncSession, org_id: str, query: LogQuery, after_id: int, limit: int
) -> list[tuple[int, LineRead]]:
    """Lines stored after `after_id` (ingest order) in streams the query selects, with their ids."""
    streams = dict(
        (
            await session.execute(
                select(Stream.id, Stream.labels).where(owned_by(Stream, org_id), *query.stream_conditions())
            )
        ).all()
    )
    if not streams:
        return []
    lines = (
        await session.execute(
            scoped(Line, org_id)
            .where(Line.id > after_id, Line.stream_id.in_(list(streams)), *query.line_conditions())
            .order_by(Line.id)
            .limit(limit)
        )
    ).scalars()
    return [(line.id, _line_read(line, streams[line.stream_id])) for line in lines]


async def last_line_id(session: AsyncSession) -> int:
    """The newest line id of any org: where a live tail starts (ids only, no row is read)."""
    return int((await session.execute(select(func.coalesce(func.max(Line.id), 0)))).scalar_one())


async def label_names(session: AsyncSession, org_id: str, start: int, end: int) -> list[str]:
    name = func.jsonb_object_keys(Stream.labels).label("name")
    rows = await session.execute(
        select(name)
        .where(owned_by(Stream, org_id), Stream.last_ts >= start, Stream.first_ts < end)
        .distinct()
        .order_by("name")
    )
    return list(rows.scalars())


async def label_values(session: AsyncSession, org_id: str, name: str, start: int, end: int) -> list[str]:
    value = Stream.labels[name].astext.label("value")
    rows = await session.execute(
        select(value)
        .where(
            owned_by(Stream, org_id),
            Stream.labels.has_key(name),
            Stream.last_ts >= start,
            Stream.first_ts < end,
        )
        .distinct()
        .order_by("value")
    )
    return list(rows.scalars())


async def delete_lines(
    session: AsyncSession, org_id: str, query: LogQuery, settings: LoggingSettings, start: int, end: int
) -> DeleteRead:
    streams = select(Stream.id).where(owned_by(Stream, org_id), *query.stream_conditions())
    statement = delete(Line).where(
        owned_by(Line, org_id),
        Line.stream_id.in_(streams),
        Line.ts >= start,
        Line.ts < end,
        *query.line_conditions(),
    )
    return DeleteRead(deleted=await _guarded(session, settings, _deleted(session, statement)))


async def get_retention(session: AsyncSession, org_id: str, settings: LoggingSettings) -> RetentionRead:
    row = (await session.execute(scoped(Retention, org_id))).scalar_one_or_none()
    if row is None:
        return RetentionRead(days=settings.default_retention_days, default=True)
    return RetentionRead(days=row.days, default=False)


async def set_retention(session: AsyncSession, org_id: str, days: int) -> RetentionRead:
    await session.execute(
        insert(Retention)
        .values(org_id=org_id, days=days)
        .on_conflict_do_update(index_elements=["org_id"], set_={"days": days, "updated_at": func.now()})
    )
    return RetentionRead(days=days, default=False)


async def reset_retention(session: AsyncSession, org_id: str) -> None:
    await session.execute(delete(Retention).where(owned_by(Retention, org_id)))


def cutoff_ns(days: int, now: datetime | None = None) -> int:
    moment = (now or datetime.now(UTC)) - timedelta(days=days)
    return int(moment.timestamp()) * NS


async def apply_retention(
    session: AsyncSession, settings: LoggingSettings, now: datetime | None = None
) -> int:
    """Delete every org's lines older than its retention (the default for orgs without one)."""
    deleted = 0
    for org_id, days in (await session.execute(select(Retention.org_id, Retention.days))).all():
        deleted += await _deleted(
            session, delete(Line).where(owned_by(Line, org_id), Line.ts < cutoff_ns(days, now))
        )
    custom = exists().where(Retention.org_id == Line.org_id)
    default = cutoff_ns(settings.default_retention_days, now)
    return deleted + await _deleted(session, delete(Line).where(Line.ts < default, ~custom))


async def _deleted(session: AsyncSession, statement: Any) -> int:
    result = await session.execute(statement)
    assert isinstance(result, CursorResult)  # a DELETE's result, which has a rowcount
    return int(result.rowcount or 0)
