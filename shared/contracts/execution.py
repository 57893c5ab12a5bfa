"""Events the execution target publishes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from coder.shared.contracts import Contract


class JobFinished(Contract):
    """A job ended: `status` is finished or cancelled; `outcome` says how (exited, cpu_time,
    wall_time, memory, processes, output, cancelled, error) and `reason` why, in words. `exit_code`
    is null when a signal ended it (`signal`) or it never started. `reference` is the caller's own
    (e.g. a plan step)."""

    event_type: ClassVar[str] = "execution.job.finished"
    schema_version: ClassVar[int] = 1

    job_id: str
    status: str
    outcome: str
    reason: str
    exit_code: int | None = None
    signal: int | None = None
    sandbox: str | None = None
    reference: str | None = None
    user_id: str
    duration_seconds: float | None = Field(default=None, ge=0)
