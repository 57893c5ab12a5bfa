"""The poller: every target's readiness and /metrics, read at an interval and kept as `Scrape` rows.

One replica polls at a time: each round runs in a transaction holding a PostgreSQL advisory lock,
and skips when another replica's round is more recent than the interval (a lease on the last poll).
In `all` mode the targets answer in-process and share one Prometheus registry, so a target's numbers
are the samples labelled `target="<name>"`, wherever they are read from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.observability.alerts import evaluate_all
from coder.services.observability.config import ObservabilitySettings
from coder.services.observability.models import PLATFORM, GenAiCall, Scrape, Span
from coder.services.observability.slo import bound
from coder.shared.db import transaction
from coder.shared.http import ServiceClients
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the poller: "obsv" in ASCII.
LOCK_KEY = 0x6F627376
REQUESTS = "http_requests"
LATENCY = "http_request_duration_seconds"


@dataclass
class Reading:
    """One target's counters as its /metrics exposes them, summed over method and route."""

    requests: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, float] = field(default_factory=dict)
    latency_count: float = 0.0
    latency_sum: float = 0.0


def _lines_of(exposition: str, target: str) -> str:
    """The exposition's lines of the two families, for `target` only: a process serving every target
    exposes them all (hundreds of routes, a histogram each), and the parser is pure Python."""
    label = f'target="{target}"'
    kept = []
    for line in exposition.splitlines():
        if line.startswith("#"):
            if line.split(" ", 3)[2:3] in ([REQUESTS + "_total"], [REQUESTS], [LATENCY]):
                kept.append(line)
        elif line.startswith((REQUESTS + "_total{", LATENCY + "_")) and label in line:
            kept.append(line)
    return "\n".join(kept) + "\n"


def parse_metrics(exposition: str, target: str) -> Reading:
    """The request counters and latency histogram of `target` in a Prometheus text exposition."""
    reading = Reading()
    for family in text_string_to_metric_families(_lines_of(exposition, target)):
        if family.name not in (REQUESTS, LATENCY):
            continue
        for sample in family.samples:
            if sample.labels.get("target") != target:
                continue
            if sample.name == REQUESTS + "_total":
                status = sample.labels.get("status", "")
                reading.requests[status] = reading.requests.get(status, 0.0) + sample.value
            elif sample.name == LATENCY + "_bucket":
                le = bound(sample.labels["le"])
                reading.buckets[le] = reading.buckets.get(le, 0.0) + sample.value
            elif sample.name == LATENCY + "_count":
                reading.latency_count += sample.value
            elif sample.name == LATENCY + "_sum":
                reading.latency_sum += sample.value
    return reading


async def read_target(
    client: httpx.AsyncClient, exposition: asyncio.Future[str], target: str, seconds: float
) -> dict[str, object]:
    """One poll of one target: the fields of its `Scrape` row. `exposition`: the text of its `/metrics`
    being read (on its metrics port, not beside `/readyz`; shared by the targets of one registry)."""
    row: dict[str, object] = {"target": target, "up": False, "ready_status": None, "error": None}
    try:
        ready = await client.get("/readyz", timeout=seconds)
        row["ready_status"] = ready.status_code
        reading = parse_metrics(await exposition, target)
    except (httpx.HTTPError, ValueError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return row
    if ready.status_code != 200:
        row["error"] = f"/readyz answered {ready.status_code}"
    row.update(
        up=ready.status_code == 200,
        requests=reading.requests,
        buckets=reading.buckets,
        latency_count=reading.latency_count,
        latency_sum=reading.latency_sum,
    )
    return row


async def _exposition(client: httpx.AsyncClient, seconds: float) -> str:
    metrics = await client.get("/metrics", timeout=seconds)
    metrics.raise_for_status()
    return metrics.text


async def scrape(
    session: AsyncSession,
    clients: ServiceClients,
    metrics: ServiceClients,
    targets: Iterable[str],
    *,
    seconds: float = 5.0,
    now: datetime | None = None,
) -> list[Scrape]:
    """Poll `targets` at once and store a row for each (in the caller's transaction). Targets whose
    `/metrics` is one (those a process serves share its registry) have it read once."""
    names = sorted(set(targets))
    expositions: dict[object, asyncio.Future[str]] = {}
    for name in names:
        if metrics.source(name) not in expositions:
            expositions[metrics.source(name)] = asyncio.ensure_future(
                _exposition(metrics.client(name), seconds)
            )
    try:
        rows = await asyncio.gather(
            *(
                read_target(clients.client(name), expositions[metrics.source(name)], name, seconds)
                for name in names
            )
        )
    finally:
        for read in expositions.values():
            read.cancel()
        await asyncio.gather(*expositions.values(), return_exceptions=True)
    at = now or datetime.now(UTC)
    scrapes = [Scrape(org_id=PLATFORM, at=at, **row) for row in rows]
    session.add_all(scrapes)
    await session.flush()
    return scrapes


def platform_targets(urls: Mapping[str, str]) -> list[str]:
    """The targets the platform knows where to reach: every registered one."""
    return sorted(urls)


async def poll_once(
    sessions: async_sessionmaker[AsyncSession],
    clients: ServiceClients,
    metrics: ServiceClients,
    targets: Iterable[str],
    settings: ObservabilitySettings,
    *,
    force: bool = False,
) -> list[Scrape] | None:
    """One round: scrape, evaluate every alert rule, apply retention. None when another replica holds
    the lock or polled less than an interval ago (unless `force`: then wait for the lock)."""
    async with transaction(sessions) as session:
        if force:
            await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        else:
            got = (
                await session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            ).scalar_one()
            if not got:
                return None
            last = (await session.execute(select(func.max(Scrape.at)))).scalar_one()
            interval = timedelta(seconds=settings.scrape_interval_seconds * 0.9)
            if last is not None and datetime.now(UTC) - last < interval:
                return None
        scrapes = await scrape(session, clients, metrics, targets, seconds=settings.scrape_timeout_seconds)
        now = datetime.now(UTC)
        await evaluate_all(session, now)
        await apply_retention(session, settings, now)
        return scrapes


async def apply_retention(session: AsyncSession, settings: ObservabilitySettings, now: datetime) -> None:
    await session.execute(delete(Scrape).where(Scrape.at < now - timedelta(days=settings.retention_days)))
    await session.execute(
        delete(Span).where(Span.received_at < now - timedelta(days=settings.span_retention_days))
    )
    await session.execute(
        delete(GenAiCall).where(GenAiCall.at < now - timedelta(days=settings.genai_retention_days))
    )


async def poller(runtime: Runtime) -> None:
    """The background task: a round every `scrape_interval_seconds`, on whichever replica gets it."""
    settings = runtime.config(ObservabilitySettings)
    while True:
        try:
            await poll_once(
                runtime.sessions,
                runtime.clients,
                runtime.metrics,
                platform_targets(runtime.service_urls),
                settings,
            )
        except Exception:
            log.exception("polling the platform's targets failed; trying again at the next interval")
        await asyncio.sleep(settings.scrape_interval_seconds)
