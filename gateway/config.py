from __future__ import annotations

import base64
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings

# A fixed key so `make run` works on a laptop; refused outside development.
DEVELOPMENT_KEY_ENCRYPTION_KEY = base64.b64encode(b"coder-gateway-development-kek-!!").decode()


class GatewaySettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")
    development_defaults: ClassVar = {"key_encryption_key": DEVELOPMENT_KEY_ENCRYPTION_KEY}

    # Token signing. Private keys live in the gateway's tables, sealed with this key (base64 of 32 bytes).
    key_encryption_key: str = DEVELOPMENT_KEY_ENCRYPTION_KEY
    # The algorithm of new signing keys.
    signing_algorithm: Literal["EdDSA", "ES256"] = "EdDSA"
    # A new signing key after this long; the old one stays in the JWKS until its tokens expired.
    signing_key_lifetime_seconds: int = Field(default=30 * 86400, ge=60)
    # A new key is published this long before it signs: more than the verifiers' JWKS refresh interval.
    signing_key_activation_seconds: float = Field(default=30.0, ge=0)
    # How often a process re-reads the keys (picks up another replica's rotation).
    signing_key_reload_seconds: float = Field(default=60.0, gt=0)
    # Lifetime of an access token (a JWT); the IDE refreshes before it ends.
    access_token_ttl_seconds: int = Field(default=600, ge=30, le=86400)
    # Lifetime of a refresh token; each refresh rotates it (and never past the session's end).
    refresh_token_ttl_seconds: int = Field(default=30 * 86400, ge=300)
    # A sign-in session ends after this long, however often its refresh token rotated.
    session_max_age_seconds: int = Field(default=90 * 86400, ge=300)
    # The longest `expires_in_days` a personal access token may ask for.
    personal_token_max_days: int = Field(default=365, ge=1, le=3650)
    # How long an invitation to an organization can be accepted.
    invitation_ttl_seconds: int = Field(default=7 * 86400, ge=60)

    # Local accounts (email and password, argon2id); off: sign-in through OIDC only.
    local_accounts: bool = True
    # Anyone may sign up and found an organization; off: only the first user and invited people.
    open_signup: bool = False
    # The shortest password accepted (all digits, or fewer than 4 distinct characters, never is).
    password_min_length: int = Field(default=10, ge=8, le=128)
    # Each failed sign-in on an account from one address doubles that address's wait on that account
    # (1, 2, 4, ... s) up to this cap; the owner, from another address, is never locked out.
    login_backoff_max_seconds: int = Field(default=900, ge=1)
    # Failed sign-ins from one address across accounts (password spraying), per window.
    login_max_failures_per_ip: int = Field(default=50, ge=1)
    # How long failures are remembered.
    login_failure_window_seconds: int = Field(default=900, ge=1)

    # OpenID Connect: Google by default; any issuer with a discovery document. Off without a client id.
    oidc_issuer: str = "https://accounts.google.com"
    # The client registered with the issuer; unset, OIDC sign-in is off.
    oidc_client_id: str | None = None
    # That client's secret.
    oidc_client_secret: str | None = None
    # The gateway's `/auth/oidc/callback` as the issuer knows it (registered with the client).
    oidc_redirect_uri: str = "http://localhost:3000/auth/oidc/callback"
    # The scopes asked for (space-separated).
    oidc_scopes: str = "openid email profile"
    # The name `GET /auth/providers` gives the IDE's sign-in button.
    oidc_provider_name: str = "Google"
    # Only addresses in these domains may sign in through OIDC (empty: any verified address).
    oidc_allowed_domains: list[str] = Field(default_factory=list)
    # Where a finished sign-in may send the browser back to, besides loopback addresses (the IDE).
    allowed_return_urls: list[str] = Field(default_factory=list)

    # The proxy: the largest request body accepted (413 beyond).
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # Connecting to a target.
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # Longest silence while reading from a target (between chunks when streaming).
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    # Per target overrides of the read timeout, e.g. {"ai": 300}.
    target_timeouts: dict[str, float] = Field(default_factory=dict)
    # Retries of an idempotent request that failed before a byte was sent.
    retries: int = Field(default=2, ge=0, le=5)
    # The first retry's wait, doubled for each next one.
    retry_backoff_seconds: float = Field(default=0.05, ge=0)
    # Failures in a row that open a target's circuit breaker (503 at once until it resets).
    breaker_failure_threshold: int = Field(default=5, ge=1)
    # How long an open breaker waits before letting a trial request through.
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    # Connections to targets open at once, all targets together.
    max_upstream_connections: int = Field(default=512, ge=1)

    # Rate limits in Redis: requests per window of one token (429 with Retry-After beyond).
    rate_limit_per_token: int = Field(default=1200, ge=1)
    # Requests per window from one client address.
    rate_limit_per_ip: int = Field(default=6000, ge=1)
    # The rate limits' window.
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    # Redis-backed checks (rate limits, the revocation list): keep serving when Redis is down, or refuse.
    fail_open: bool = True

    # CORS for the IDE: origins allowed besides those `cors_origin_regex` matches.
    cors_origins: list[str] = Field(default_factory=list)
    # Origins allowed by pattern: by default loopback dev servers and VS Code webviews.
    cors_origin_regex: str | None = r"^(https?://(localhost|127\.0\.0\.1)(:\d+)?|vscode-webview://[\w.-]+)$"

    @field_validator("key_encryption_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        try:
            if len(base64.b64decode(value, validate=True)) != 32:
                raise ValueError
        except ValueError:
            raise ValueError("must be the base64 of 32 random bytes") from None
        return value

    @property
    def kek(self) -> bytes:
        return base64.b64decode(self.key_encryption_key)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_client_id)

    def timeout_for(self, target: str) -> float:
        return self.target_timeouts.get(target, self.read_timeout_seconds)
