"""SLO arithmetic over stored scrapes: increases of cumulative counters between polls (counter
resets counted as Prometheus' `increase` does, without its extrapolation), error budgets and burn
rates (the Google SRE workbook's multi-window, multi-burn-rate alerting)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.observability.models import PLATFORM, Scrape, Slo
from coder.shared.repository import owned_by

AVAILABILITY, LATENCY = "availability", "latency"
# The windows every SLO reports its burn rate over (seconds): the workbook's page and ticket pairs.
BURN_WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}


def bound(le: str) -> str:
    """A bucket's bound written one way ("0.1", "1", "+Inf") whatever the exposition wrote."""
    value = float(le)
    return "+Inf" if value == float("inf") else repr(value).removesuffix(".0")


def bucket_key(seconds: float) -> str:
    return bound(str(seconds))


@dataclass(frozen=True)
class Counts:
    """Requests in a range: all of them, the good ones (per the SLO) and the 5xx."""

    total: float = 0.0
    good: float = 0.0
    errors: float = 0.0
    # Scrapes the numbers come from (the first is the baseline before the range).
    scrapes: int = 0

    @property
    def bad(self) -> float:
        return self.total - self.good


def increase(values: Sequence[float]) -> float:
    """How much a counter grew over consecutive readings; a drop is a reset (the target restarted),
    after which it counted from zero."""
    grown = 0.0
    for before, after in itertools.pairwise(values):
        grown += after - before if after >= before else after
    return grown


async def readings(session: AsyncSession, target: str, start: datetime, end: datetime) -> list[Scrape]:
    """The successful scrapes of `target` in (start, end], after the last one at or before `start`
    (the baseline the first increase is measured from)."""
    up = owned_by(Scrape, PLATFORM) & (Scrape.target == target) & Scrape.up
    baseline = (
        await session.scalars(
            select(Scrape).where(up, Scrape.at <= start).order_by(Scrape.at.desc(), Scrape.id.desc()).limit(1)
        )
    ).all()
    rows = (
        await session.scalars(
            select(Scrape).where(up, Scrape.at > start, Scrape.at <= end).order_by(Scrape.at, Scrape.id)
        )
    ).all()
    return [*baseline, *rows]


def _total(row: Scrape) -> float:
    return float(sum(row.requests.values()))


def _errors(row: Scrape) -> float:
    return float(sum(v for status, v in row.requests.items() if status.startswith("5")))


def counts(rows: Sequence[Scrape], kind: str, threshold_seconds: float | None = None) -> Counts:
    errors = increase([_errors(r) for r in rows])
    if kind == AVAILABILITY:
        total = increase([_total(r) for r in rows])
        return Counts(total=total, good=total - errors, errors=errors, scrapes=len(rows))
    assert threshold_seconds is not None
    key = bucket_key(threshold_seconds)
    total = increase([r.latency_count for r in rows])
    good = increase([r.buckets.get(key, 0.0) for r in rows])
    return Counts(total=total, good=good, errors=errors, scrapes=len(rows))


async def slo_counts(session: AsyncSession, slo: Slo, start: datetime, end: datetime) -> Counts:
    return counts(await readings(session, slo.target, start, end), slo.kind, slo.threshold_seconds)


def error_ratio(c: Counts) -> float:
    return c.bad / c.total if c.total > 0 else 0.0


def burn_rate(c: Counts, objective: float) -> float:
    """How fast the error budget burns: 1 spends exactly the budget over the SLO's window."""
    return error_ratio(c) / (1.0 - objective)


async def burn_rate_over(session: AsyncSession, slo: Slo, seconds: int, now: datetime) -> float:
    return burn_rate(await slo_counts(session, slo, now - timedelta(seconds=seconds), now), slo.objective)
