"""Events the dashboard target publishes: a version saved (created, saved or restored) and a deletion."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from coder.shared.contracts import Contract


class DashboardSaved(Contract):
    """A new version: 1 when created; `restored_from` names the version a restore copied."""

    event_type: ClassVar[str] = "dashboard.dashboard.saved"
    schema_version: ClassVar[int] = 1

    dashboard_id: str
    version: int = Field(ge=1)
    title: str
    owner_id: str | None
    team_id: str | None
    author: str
    restored_from: int | None = None


class DashboardDeleted(Contract):
    event_type: ClassVar[str] = "dashboard.dashboard.deleted"
    schema_version: ClassVar[int] = 1

    dashboard_id: str
    actor: str
