"""Events the usage target publishes."""

from __future__ import annotations

from typing import ClassVar

from coder.shared.contracts import Contract


class BudgetExceeded(Contract):
    """A reservation was refused: `id` names the budget it would have overrun (amounts in the
    budget's metric, USD or tokens)."""

    event_type: ClassVar[str] = "usage.budget.exceeded"
    schema_version: ClassVar[int] = 1

    id: str
    name: str
    scope: str
    scope_id: str | None
    metric: str
    period: str
    period_start: str
    limit: float
    spent: float
    reserved: float
    requested: float
    user_id: str
    team_id: str | None
    api_key_id: str | None
