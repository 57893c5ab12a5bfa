"""Events the secrets target publishes."""

from __future__ import annotations

from typing import ClassVar

from coder.shared.contracts import Contract


class SecretRotated(Contract):
    """A secret got a new version (its second or later): consumers holding the value re-read it."""

    event_type: ClassVar[str] = "secrets.secret.rotated"
    schema_version: ClassVar[int] = 1

    project: str
    environment: str
    path: str
    version: int
