from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from coder.shared.schemas import Input

Title = Annotated[str, Field(min_length=1, max_length=200)]
TeamId = Annotated[str, Field(min_length=1, max_length=128)]
Message = Annotated[str, Field(max_length=2000)]
GRID_COLUMNS = 24
MAX_PANELS = 50
MAX_TIMEOUT = 30.0
DEFAULT_TIMEOUT = 5.0
ParamValue = str | int | float | bool


class GridPos(Input):
    """Grafana's gridPos: a 24-column grid, `x` + `w` within it; `y` and `h` in rows."""

    x: int = Field(ge=0, lt=GRID_COLUMNS)
    y: int = Field(ge=0, le=10_000)
    w: int = Field(ge=1, le=GRID_COLUMNS)
    h: int = Field(ge=1, le=100)

    @model_validator(mode="after")
    def _within(self) -> GridPos:
        if self.x + self.w > GRID_COLUMNS:
            raise ValueError(f"x + w is {self.x + self.w}, beyond the grid's {GRID_COLUMNS} columns")
        return self


class Query(Input):
    """A read of another target: `GET <target's root><path>?<params>`, with the viewer's own token."""

    target: Annotated[str, Field(min_length=1, max_length=64, description="A target, e.g. planning")]
    method: Annotated[str, Field(max_length=10, description="GET only")] = "GET"
    path: Annotated[
        str, Field(min_length=4, max_length=500, description="The target's own path, e.g. /v1/plans")
    ]
    params: dict[Annotated[str, Field(min_length=1, max_length=100)], ParamValue] = Field(
        default_factory=dict, max_length=20
    )


class Panel(Input):
    id: int = Field(ge=1, le=10_000, description="Unique in the dashboard")
    title: Annotated[str, Field(max_length=200)] = ""
    type: Annotated[
        str, Field(min_length=1, max_length=50, description="How the IDE draws it: stat, table...")
    ]
    gridPos: GridPos  # noqa: N815 - Grafana's name
    query: Query | None = Field(default=None, description="None for a panel without data (text)")
    options: dict[Annotated[str, Field(max_length=100)], Any] = Field(default_factory=dict, max_length=50)
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT, description=f"The query's own timeout (default {DEFAULT_TIMEOUT})"
    )


Panels = Annotated[list[Panel], Field(max_length=MAX_PANELS)]


class DashboardCreate(Input):
    title: Title
    team_id: TeamId | None = Field(
        default=None, description="A team's dashboard; without it, the caller's own"
    )
    panels: Panels = []
    message: Message = ""


class DashboardSave(Input):
    """A new version: the whole content, saved against `version`, the one read (409 if it is no longer
    the latest)."""

    version: int = Field(ge=1, le=2**31 - 1)
    title: Title
    panels: Panels
    message: Message = ""


class Restore(Input):
    message: Message = ""


class DashboardRead(BaseModel):
    id: uuid.UUID
    title: str
    owner_id: str | None
    team_id: str | None
    panels: list[dict[str, Any]]
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class DashboardSummary(BaseModel):
    id: uuid.UUID
    title: str
    owner_id: str | None
    team_id: str | None
    version: int
    updated_at: datetime


class VersionSummary(BaseModel):
    version: int
    author: str
    message: str
    restored_from: int | None
    created_at: datetime


class VersionRead(VersionSummary):
    dashboard_id: uuid.UUID
    title: str
    panels: list[dict[str, Any]]


class SlotStatus(StrEnum):
    OK = "ok"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    ERROR = "error"
    NO_QUERY = "no_query"


class Slot(BaseModel):
    """What one panel's query gave: `data` when `status` is ok, else why not."""

    panel_id: int
    status: SlotStatus
    http_status: int | None = None
    data: Any = None
    detail: str | None = None


class AggregateRead(BaseModel):
    dashboard: DashboardRead
    slots: list[Slot]
