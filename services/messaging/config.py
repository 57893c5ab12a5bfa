from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class MessagingSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="MESSAGING_")

    # How often an idle WebSocket connection checks its user's stream in PostgreSQL: the bound on how
    # late an event is when its live note was lost (a Redis outage, a replica stopped mid-publish).
    check_seconds: float = Field(default=5.0, gt=0, le=300)
    # How long stored events stay available to reconnecting clients.
    event_retention_days: int = Field(default=7, ge=1, le=365)
