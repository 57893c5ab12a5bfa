from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class LoggingSettings(TargetSettings):
    """Limits keep labels low-cardinality (Loki's defaults, a little tighter) and pushes bounded."""

    model_config = SettingsConfigDict(env_prefix="LOGGING_")

    # Labels one stream may have.
    max_labels: int = Field(default=15, ge=1, le=64)
    # The longest label name.
    max_label_name_length: int = Field(default=64, ge=1, le=1024)
    # The longest label value.
    max_label_value_length: int = Field(default=256, ge=1, le=4096)
    # The longest log line, in bytes.
    max_line_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    # Distinct label sets one org may have: a label holding ids would make one stream per id.
    max_streams_per_org: int = Field(default=10_000, ge=1)
    # Lines older than this are deleted for orgs that set no retention of their own.
    default_retention_days: int = Field(default=30, ge=1, le=3650)
    # How often lines past their retention are deleted.
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    # How often a live tail looks for new lines (every replica's lines, through the database).
    tail_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # A query's statement timeout: a regex over many lines is refused rather than left running.
    query_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
