from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from coder.shared.schemas import Input

PATH_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
SCOPE_PATTERN = r"^[A-Za-z0-9_.-]*$"
MAX_VALUE_BYTES = 512 * 1024


def _valid_path(path: str) -> str:
    if len(path) > 512 or not PATH_PATTERN.match(path) or any(p in (".", "..") for p in path.split("/")):
        raise ValueError(
            "a path is slash-separated segments of letters, digits, '_', '-', '.' (<= 512 chars)"
        )
    return path


SecretPath = Annotated[str, AfterValidator(_valid_path)]
ScopeName = Annotated[str, Field(max_length=100, pattern=SCOPE_PATTERN)]


class WriteOptions(Input):
    cas: int | None = Field(
        default=None,
        ge=0,
        description="Write only if the current version is this (0: only if the secret does not exist yet)",
    )


class SecretWrite(Input):
    data: dict[str, Any] = Field(description="The key/value pairs stored as one version", min_length=1)
    options: WriteOptions = Field(default_factory=WriteOptions)


class VersionsSelection(Input):
    versions: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=100)


class MetadataUpdate(Input):
    max_versions: int | None = Field(default=None, ge=1, le=1000)
    cas_required: bool | None = None
    custom_metadata: (
        dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=512)]] | None
    ) = Field(default=None, max_length=64)


class VersionRead(BaseModel):
    version: int
    created_time: datetime
    created_by: str
    deletion_time: datetime | None
    destroyed: bool


class SecretRead(BaseModel):
    data: dict[str, Any]
    metadata: VersionRead


class MetadataRead(BaseModel):
    path: str
    project: str
    environment: str
    current_version: int
    oldest_version: int
    max_versions: int
    cas_required: bool
    custom_metadata: dict[str, str]
    created_time: datetime
    updated_time: datetime
    versions: dict[str, VersionRead]


class PathRead(BaseModel):
    path: str
    project: str
    environment: str
    current_version: int
    updated_time: datetime


class RewrapRead(BaseModel):
    rewrapped: int
    active_key_id: str


class AuditEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Any
    actor: str
    action: str
    project: str
    environment: str
    path: str
    version: int | None
    request_id: str | None
    details: dict[str, Any]
    at: datetime
