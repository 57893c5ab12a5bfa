"""Settings from the environment: one platform-wide class, one class per target with its own prefix."""

from __future__ import annotations

import ipaddress
import json
import os
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

METRICS_PORT = 9464  # every process's /metrics unless CODER_METRICS_PORT says otherwise (shared/metrics.py)
WORKLOAD_SECRET_SUFFIX = "_WORKLOAD_SECRET"  # noqa: S105 - a name (coder.shared.target.workload_secret)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class PlatformSettings(BaseSettings):
    """What every process shares: where the data stores are, how to reach other targets, telemetry."""

    model_config = SettingsConfigDict(env_prefix="CODER_", extra="ignore", populate_by_name=True)

    # Outside development, development-only defaults (the key-encryption keys) are refused.
    environment: Environment = Environment.DEVELOPMENT
    # Unset: an embedded PostgreSQL with its data in `CODER_DATA_DIR` (a laptop's; the image has none).
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    # Unset: an in-process cache that only this process sees (enough for `run --target all`).
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    # Unset: the in-process event bus (same routing, retries and dead letters), this process only.
    amqp_url: str | None = Field(default=None, validation_alias="AMQP_URL")
    # Where the embedded PostgreSQL keeps its data.
    data_dir: str = ".data"
    # The lowest level logged: DEBUG, INFO, WARNING or ERROR.
    log_level: str = "INFO"
    # Where other targets listen when they do not run in this process: JSON {"secrets": "http://..."}.
    # A target missing here is reached at http://<target>:<port> (its Kubernetes Service).
    service_urls: dict[str, str] = Field(default_factory=dict)
    # Prometheus /metrics for the cluster: a listener of its own (`run`), never the public port; 0
    # picks a free one.
    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535)
    # Other targets' /metrics (observability reads them), by target; a target missing here is read at
    # http://<target>:<metrics_port> (its Service's `metrics` port in a cluster).
    metrics_urls: dict[str, str] = Field(default_factory=dict)
    # Token verification: a JWKS URL (the gateway's), or a JWKS document inline (tests, air-gapped).
    jwks_url: str | None = None
    # The JWKS document itself, instead of `CODER_JWKS_URL`.
    jwks: str | None = None
    # The `iss` of the gateway's tokens, required by every verifier.
    token_issuer: str = "coder-platform"  # noqa: S105 - a name, not a secret
    # Their `aud`, likewise.
    token_audience: str = "coder-platform"  # noqa: S105
    # OpenTelemetry: the standard OTEL_* variables configure the exporter; this only names the service.
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs, comma-separated):
    # the ingress in front of the gateway, the gateway in front of a target. None by default: a
    # client naming its own address would pick the address its rate limits and audit entries count.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Target -> its workload secret, read from every `<TARGET>_WORKLOAD_SECRET` of the environment (a
    # generated secret of a target whose descriptor has `grants`): a calling target presents its own
    # to the gateway, the gateway compares with the one it was given.
    workload_secrets: dict[str, str] = Field(default_factory=dict)
    # Ship this process's own logs to the logging target (shared/logship.py): its push URL, e.g.
    # http://gateway:3000/api/logging/v1/push. Unset: logs go to stderr only.
    log_ship_url: str | None = None
    # A token holding `logging:push` (a personal access token of the org that owns the platform's logs).
    log_ship_token: str | None = None
    # Lines kept while the logging target is out of reach; beyond it new lines are dropped (and counted).
    log_ship_buffer: int = Field(default=10_000, ge=100, le=1_000_000)
    # How often the relay looks for committed outbox rows to publish.
    outbox_poll_seconds: float = 1.0
    # Deliveries of one event to a consumer before it is dead-lettered.
    event_delivery_limit: int = 5

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        """Addresses as given; networks with their host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`),
        the form uvicorn's ProxyHeadersMiddleware parses: it reads any other as a host name, which
        no peer ever matches."""
        normal = []
        for item in value:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from None
            normal.append(str(network) if "/" in item else item)
        return normal

    @model_validator(mode="before")
    @classmethod
    def _workload_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict) and "workload_secrets" not in data:
            found = {
                name.removesuffix(WORKLOAD_SECRET_SUFFIX).lower(): value
                for name, value in os.environ.items()
                if name.endswith(WORKLOAD_SECRET_SUFFIX) and value
            }
            data = {**data, "workload_secrets": found}
        return data

    def jwks_document(self) -> dict[str, Any] | None:
        return json.loads(self.jwks) if self.jwks else None


class TargetSettings(BaseSettings):
    """Base for a target's own settings; subclasses set `env_prefix` to `<TARGET>_`.

    Fields listed in `development_defaults` hold values that are only safe on a laptop: outside
    development they must be set explicitly, or the process refuses to start (`load_target_settings`).
    """

    model_config = SettingsConfigDict(extra="ignore")
    development_defaults: ClassVar[dict[str, Any]] = {}


T = TypeVar("T", bound=TargetSettings)


def load_target_settings(kind: type[T], environment: Environment) -> T:
    """A target's settings from its environment variables, read by the process's entry point and
    handed to the runtime. `environment` is the platform's (CODER_ENVIRONMENT, read once)."""
    settings = kind()
    if environment is Environment.DEVELOPMENT:
        return settings
    prefix = kind.model_config.get("env_prefix", "")
    for name, unsafe in kind.development_defaults.items():
        if getattr(settings, name) == unsafe:
            raise ValueError(
                f"{prefix}{name.upper()} still has its development default; "
                f"set it explicitly when CODER_ENVIRONMENT={environment.value}"
            )
    return settings
