from __future__ import annotations

import base64
import json
from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings

# A fixed key so `make run` works on a laptop; refused outside development.
DEVELOPMENT_KEYRING = json.dumps({"dev": base64.b64encode(b"coder-platform-development-key-!").decode()})


class SecretsSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="SECRETS_")
    development_defaults: ClassVar = {"master_keys": DEVELOPMENT_KEYRING}

    # Key-encryption keys: JSON {"<key id>": "<base64 of 32 bytes>"}; usually mounted from a Secret.
    master_keys: str = DEVELOPMENT_KEYRING
    # The key id new data keys are wrapped with; the others still unwrap until rewrapped.
    active_key_id: str = "dev"
    # Versions a secret keeps when it was written without `max_versions`.
    default_max_versions: int = Field(default=10, ge=1, le=1000)

    @field_validator("master_keys")
    @classmethod
    def _valid_keyring(cls, value: str) -> str:
        try:
            keys = json.loads(value)
            if not keys or not all(len(base64.b64decode(k, validate=True)) == 32 for k in keys.values()):
                raise ValueError
        except (ValueError, TypeError, AttributeError):
            raise ValueError('must be JSON {"<key id>": "<base64 of 32 random bytes>", ...}') from None
        return value

    def keyring(self) -> dict[str, bytes]:
        return {kid: base64.b64decode(key) for kid, key in json.loads(self.master_keys).items()}
