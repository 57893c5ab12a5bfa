from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class ObservabilitySettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="OBSERVABILITY_", extra="ignore")

    # How often the platform's targets are polled (one replica polls: a PostgreSQL advisory lock).
    scrape_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    # One target's readiness and /metrics must answer within this.
    scrape_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Scrapes older than this are deleted; an SLO's window may not be longer.
    retention_days: int = Field(default=30, ge=1, le=400)
    # Spans (the service map) are deleted after this.
    span_retention_days: int = Field(default=7, ge=1, le=400)
    # GenAI calls (their metrics) are deleted after this.
    genai_retention_days: int = Field(default=30, ge=1, le=400)
    # Spans one OTLP request may carry.
    max_spans_per_request: int = Field(default=10_000, ge=1, le=1_000_000)
