"""Alert rules and their state, as Prometheus keeps it: a rule whose condition holds is pending until
it has held `for_seconds`, then firing; when it stops holding it is inactive again. Each change is a
history row; firing and resolving are also events (observability.alert.*) through the outbox."""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.observability import slo as slos
from coder.services.observability.models import PLATFORM, AlertRule, AlertTransition, Base, Scrape, Slo
from coder.shared.repository import owned_by

log = logging.getLogger(__name__)

INACTIVE, PENDING, FIRING = "inactive", "pending", "firing"
BURN_RATE, THRESHOLD = "burn_rate", "threshold"
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
# Threshold metrics of a target: its readiness (1 up, 0 down), its share of 5xx and its request rate.
METRICS = ("up", "error_ratio", "request_rate")


async def threshold_value(session: AsyncSession, rule: AlertRule, now: datetime) -> float | None:
    assert rule.target is not None
    assert rule.metric is not None
    if rule.metric == "up":
        last = (
            await session.scalars(
                select(Scrape)
                .where(owned_by(Scrape, PLATFORM), Scrape.target == rule.target, Scrape.at <= now)
                .order_by(Scrape.at.desc(), Scrape.id.desc())
                .limit(1)
            )
        ).first()
        return None if last is None else float(last.up)
    window = rule.window_seconds or 300
    rows = await slos.readings(session, rule.target, now - timedelta(seconds=window), now)
    if len(rows) < 2:
        return None
    c = slos.counts(rows, slos.AVAILABILITY)
    if rule.metric == "error_ratio":
        return c.errors / c.total if c.total > 0 else 0.0
    return c.total / window


async def burn_value(session: AsyncSession, rule: AlertRule, now: datetime) -> float | None:
    """The long window's burn rate when both windows burn faster than the factor, else the lower."""
    objective = await session.get(Slo, rule.slo_id) if rule.slo_id else None
    if objective is None or objective.org_id != rule.org_id:
        return None
    assert rule.long_window_seconds is not None
    assert rule.short_window_seconds is not None
    long = await slos.burn_rate_over(session, objective, rule.long_window_seconds, now)
    short = await slos.burn_rate_over(session, objective, rule.short_window_seconds, now)
    return long if short > (rule.factor or 0.0) else min(long, short)


async def evaluate(session: AsyncSession, rule: AlertRule, now: datetime) -> None:
    if rule.kind == BURN_RATE:
        value = await burn_value(session, rule, now)
        holds = value is not None and value > (rule.factor or 0.0)
    else:
        value = await threshold_value(session, rule, now)
        assert rule.comparison is not None
        assert rule.threshold is not None
        holds = value is not None and COMPARISONS[rule.comparison](value, rule.threshold)
    rule.last_value = value
    rule.evaluated_at = now
    state = rule.state
    if holds:
        if state == INACTIVE:
            rule.active_since = now
        since = rule.active_since or now
        state = FIRING if now - since >= timedelta(seconds=rule.for_seconds) else PENDING
    else:
        state, rule.active_since = INACTIVE, None
    if state != rule.state:
        await _transition(session, rule, state, value, now)


async def _transition(
    session: AsyncSession, rule: AlertRule, state: str, value: float | None, now: datetime
) -> None:
    previous, rule.state, rule.state_changed_at = rule.state, state, now
    session.add(
        AlertTransition(
            org_id=rule.org_id, rule_id=rule.id, previous_state=previous, state=state, value=value, at=now
        )
    )
    data = {
        "rule_id": str(rule.id),
        "name": rule.name,
        "kind": rule.kind,
        "previous_state": previous,
        "state": state,
        "value": value,
        "target": rule.target,
        "slo_id": str(rule.slo_id) if rule.slo_id else None,
        "at": now.isoformat(),
    }
    if state == FIRING:
        await Base.events.publish(
            session, "observability.alert.firing", data, org_id=rule.org_id, subject=str(rule.id)
        )
    elif previous == FIRING:
        await Base.events.publish(
            session, "observability.alert.resolved", data, org_id=rule.org_id, subject=str(rule.id)
        )
    log.info("alert rule changed state", extra={"rule": str(rule.id), "from": previous, "to": state})


async def evaluate_all(session: AsyncSession, now: datetime) -> int:
    """Evaluate every org's rules (the poller's round holds the lock: one evaluator at a time)."""
    rules = (await session.scalars(select(AlertRule).order_by(AlertRule.id).with_for_update())).all()
    for rule in rules:
        await evaluate(session, rule, now)
    await session.flush()
    return len(rules)
