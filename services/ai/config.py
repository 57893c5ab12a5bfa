from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class AiSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="AI_")

    # A deployment that failed (429, 5xx, no answer) rests this long, or as long as its Retry-After.
    cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Background health checks: one replica probes each deployment per interval (a Redis lock).
    health_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    # One health check's answer must come within this.
    health_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Connecting to a provider.
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Between two bytes of a provider's answer (a stream may run far longer in total).
    read_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    # How long a budget hold lives: the longest call the platform expects to settle.
    reservation_ttl_seconds: int = Field(default=900, ge=1, le=3600)
