"""Events the quality target publishes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from coder.shared.contracts import Contract


class FailingCondition(BaseModel):
    """One gate condition that failed: `metric` compared with `op` ("lt" or "gt") to `threshold`
    gave ERROR for the measured `actual` value."""

    metric: str
    op: str
    threshold: float
    actual: float


class GateChanged(Contract):
    """The quality gate of a project's branch or pull request changed status (OK or ERROR; the first
    status of a branch or pull request has `previous_status` null). Exactly one of `branch` and
    `pull_request` is set. `plan_id` is the planning plan the project is linked to, if any: a
    consumer opens fix tasks there, one per failing condition."""

    event_type: ClassVar[str] = "quality.gate.changed"
    schema_version: ClassVar[int] = 1

    project_key: str
    branch: str | None
    pull_request: str | None
    status: str
    previous_status: str | None
    failing: list[FailingCondition]
    analysis_id: str
    commit: str
    plan_id: str | None = None
