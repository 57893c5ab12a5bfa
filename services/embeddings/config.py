from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from coder.services.embeddings import local
from coder.shared.settings import TargetSettings

LOCAL = "local"
AI_PREFIX = "ai:"


class ModelSpec(BaseModel):
    """One model the API offers: computed here (`local`) or by a provider behind the ai service
    (`ai:<group>`: ai's OpenAI-compatible `/v1/embeddings` is called with `model=<group>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(pattern=r"^(local|ai:[A-Za-z0-9._/:-]{1,128})$")
    dimensions: int = Field(ge=1, le=4096)
    # Matryoshka-trained: a prefix of the vector, renormalised, is itself a good embedding, so a
    # request may ask for fewer `dimensions` (OpenAI's text-embedding-3-*, WordLlama).
    shortenable: bool = False

    @property
    def group(self) -> str | None:
        return self.source.removeprefix(AI_PREFIX) if self.source.startswith(AI_PREFIX) else None


LOCAL_MODEL = ModelSpec(source=LOCAL, dimensions=local.DIMENSIONS, shortenable=True)


class EmbeddingsSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="EMBEDDINGS_")

    # Provider-backed models, JSON name -> spec, e.g.
    # {"text-embedding-3-small": {"source": "ai:openai-embeddings", "dimensions": 1536, "shortenable": true}}.
    # The local model is always offered, under its own name.
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    # The model of a request or collection that names none.
    default_model: str = local.NAME
    # The content-hash cache's bounds, enforced every `cache_prune_seconds` (service.prune_cache):
    # rows unused this long go, then the least recently used beyond `cache_max_rows`.
    cache_max_age_days: int = Field(default=90, ge=1, le=3650)
    # Rows the cache keeps at most, the least recently used going first.
    cache_max_rows: int = Field(default=2_000_000, ge=0)
    # How often the cache is pruned.
    cache_prune_seconds: float = Field(default=3600, gt=0)
    # Candidates the HNSW graph walk keeps (pgvector's `hnsw.ef_search`, set per query, at least
    # `k`): more finds more of the true nearest at more cost. 400 finds 92% of the 40 nearest of
    # 100,000 clustered vectors (bench knowledge); pgvector's default, 40, finds far fewer.
    search_ef: int = Field(default=400, ge=1, le=1000)

    @field_validator("models")
    @classmethod
    def _providers_only(cls, value: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        if local.NAME in value:
            raise ValueError(f"{local.NAME!r} is the local model's name")
        if any(spec.source == LOCAL for spec in value.values()):
            raise ValueError("only the built-in model is local; others are 'ai:<group>'")
        return value

    @model_validator(mode="after")
    def _default_offered(self) -> Self:
        if self.default_model not in self.catalog():
            raise ValueError(f"default_model {self.default_model!r} is not among the models")
        return self

    def catalog(self) -> dict[str, ModelSpec]:
        return {local.NAME: LOCAL_MODEL, **self.models}
