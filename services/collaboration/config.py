"""collaboration's settings (environment variables prefixed `COLLABORATION_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class CollaborationSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="COLLABORATION_")

    # A document's update log is merged into a snapshot after this many updates (on the replica that
    # stored the last of them), and when its last client leaves.
    snapshot_every: int = Field(default=200, ge=1, le=100_000)
    # One update message (a keystroke is tens of bytes; a paste may be large).
    max_update_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Messages queued for one slow client before it is disconnected (it resyncs when it reconnects).
    max_queued_messages: int = Field(default=1000, ge=10)
