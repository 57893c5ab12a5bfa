"""Events the workflow target publishes: one per change of a run's state."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from coder.shared.contracts import Contract


class RunFields(BaseModel):
    """Which run of which definition (and the version it runs), how it was started and for whom."""

    run_id: str
    definition_id: str
    definition_name: str
    version: int
    trigger: str  # "api", "schedule" or "event"
    actor: str  # the user the run acts for


class RunStarted(RunFields, Contract):
    event_type: ClassVar[str] = "workflow.run.started"
    schema_version: ClassVar[int] = 1


class RunCompleted(RunFields, Contract):
    """Every step completed."""

    event_type: ClassVar[str] = "workflow.run.completed"
    schema_version: ClassVar[int] = 1


class RunFailed(RunFields, Contract):
    """A step failed for good (its retries spent, or an error no retry helps), or the run timed out;
    `step` names the step, when one did."""

    event_type: ClassVar[str] = "workflow.run.failed"
    schema_version: ClassVar[int] = 1

    error: str
    step: str | None = None


class RunCancelled(RunFields, Contract):
    event_type: ClassVar[str] = "workflow.run.cancelled"
    schema_version: ClassVar[int] = 1
