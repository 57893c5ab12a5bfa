"""Events the secrets target publishes."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar

from pydantic import BaseModel

from coder.shared.contracts import Contract


class SecretRotated(Contract):
    """A secret got a new version (its second or later): consumers holding the value re-read it."""

    event_type: ClassVar[str] = "secrets.secret.rotated"
    schema_version: ClassVar[int] = 1

    project: str
    environment: str
    path: str
    version: int


# Values shorter than this are not fingerprinted: too many ordinary words would match them, and so
# short a secret is guessable from its hash; `password=...` style redaction still covers them.
FINGERPRINT_MIN_LENGTH = 8
FINGERPRINT_MAX_LENGTH = 4096


def fingerprint(org_id: str, value: str) -> bytes:
    """The keyed hash `secrets` publishes for a stored value and `logging` computes for each token of a
    pushed line: HMAC-SHA256 keyed by the org, so equal values of two orgs never share a hash (no
    table of hashes serves two tenants) and one org's secrets never redact another's lines."""
    return hmac.new(f"coder-log-redaction:{org_id}".encode(), value.encode(), hashlib.sha256).digest()


class ValueFingerprint(BaseModel):
    digest: str  # hex of `fingerprint(org_id, value)`
    length: int  # characters of the value: logging hashes only tokens of these lengths


class SecretFingerprinted(Contract):
    """A version of a secret was written: the fingerprints of its string values (never the values),
    so `logging` can keep them out of the log lines it stores."""

    event_type: ClassVar[str] = "secrets.secret.fingerprinted"
    schema_version: ClassVar[int] = 1

    path: str
    version: int
    fingerprints: list[ValueFingerprint]


def fingerprints(org_id: str, data: Any) -> list[ValueFingerprint]:
    """The fingerprints of every string (or number) leaf of a secret's data that is long enough."""
    found: dict[str, ValueFingerprint] = {}
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
            if FINGERPRINT_MIN_LENGTH <= len(text) <= FINGERPRINT_MAX_LENGTH:
                digest = fingerprint(org_id, text).hex()
                found[digest] = ValueFingerprint(digest=digest, length=len(text))
    return list(found.values())
