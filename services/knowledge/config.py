from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings


class KnowledgeSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="KNOWLEDGE_")

    # The embeddings model of new collections (one of embeddings' `GET /v1/models`); none: its default.
    embedding_model: str | None = None
    # The largest code archive uploaded.
    max_archive_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # The most an archive may unpack to.
    max_unpacked_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    # Files one archive may hold.
    max_files: int = Field(default=20_000, ge=1)
    max_file_bytes: int = Field(default=1_000_000, ge=1)  # characters of a document, at most
