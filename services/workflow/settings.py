"""workflow's own settings (WORKFLOW_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class WorkflowSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="WORKFLOW_", extra="ignore")

    # How long a worker's claim on a step lasts without renewal (renewed every third of it while the
    # step runs): how soon a step of a killed process runs again elsewhere.
    lease_seconds: float = Field(default=30.0, gt=0)
    # How often an idle worker looks for ready steps, timeouts and due schedules (a run started or a
    # step finished in this process wakes it at once).
    poll_seconds: float = Field(default=1.0, gt=0)
    # Steps one process runs at once.
    concurrency: int = Field(default=32, ge=1, le=1000)
    # Lifetime of a run's delegation (at most the gateway's cap); a run's timeout shortens it.
    run_delegation_seconds: int = Field(default=7 * 86400, ge=60)
    # Lifetime of an owner's delegation for scheduled and triggered runs (renewed with each version).
    trigger_delegation_seconds: int = Field(default=14 * 86400, ge=60)
