"""Events the resources target publishes."""

from __future__ import annotations

from typing import ClassVar

from coder.shared.contracts import Contract


class QuotaExceeded(Contract):
    """A reservation was refused: `quota_id` names the quota it would have overrun, `resource` which of
    its limits (cpu in millicores, memory and storage in bytes, sandboxes a count, ai_credits money)."""

    event_type: ClassVar[str] = "resources.quota.exceeded"
    schema_version: ClassVar[int] = 1

    quota_id: str
    name: str
    scope: str
    scope_id: str
    resource: str
    limit: float
    used: float
    requested: float
    user_id: str
    team_id: str | None
