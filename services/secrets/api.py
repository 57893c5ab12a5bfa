"""HTTP routes of `secrets` (Vault KV v2 style). Paths are relative to `/api/secrets` at the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from coder.services.secrets import service
from coder.services.secrets.config import SecretsSettings
from coder.services.secrets.crypto import Keyring
from coder.services.secrets.models import AuditEntry, Secret
from coder.services.secrets.schemas import (
    AuditEntryRead,
    MetadataRead,
    MetadataUpdate,
    PathRead,
    RewrapRead,
    ScopeName,
    SecretPath,
    SecretRead,
    SecretWrite,
    VersionRead,
    VersionsSelection,
)
from coder.services.secrets.service import Location
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import settings_of
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["secrets"])

ProjectQ = Annotated[ScopeName, Query(description="Project scope; empty for organization-wide")]
EnvironmentQ = Annotated[ScopeName, Query(description="Environment scope, e.g. `production`")]


@dataclass(frozen=True)
class Addressed:
    """A secret's location in the caller's organization, and who is acting on it."""

    at: Location
    actor: str


def addressed(permission: str) -> Any:
    """The `{path}` plus `project`/`environment` scope of a request, checked for `permission`."""

    async def dependency(
        path: SecretPath,
        project: ProjectQ = "",
        environment: EnvironmentQ = "",
        # A default, not an Annotated[] alias: annotations are strings here and cannot see `permission`.
        principal: Principal = require(permission),
    ) -> Addressed:
        return Addressed(Location(principal.org_id, project, environment, path), principal.subject)

    return Depends(dependency)


SettingsDep = Annotated[SecretsSettings, Depends(settings_of(SecretsSettings))]


async def _keyring(settings: SettingsDep) -> Keyring:
    return Keyring(settings.keyring(), settings.active_key_id)


KeyringDep = Annotated[Keyring, Depends(_keyring)]


# 409: `options.cas` does not match the current version.
@router.put("/secrets/{path:path}", response_model=VersionRead, responses=problem_responses({409}))
async def write_secret(
    body: SecretWrite,
    session: SessionDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    target: Annotated[Addressed, addressed("secrets:write")],
) -> VersionRead:
    """Write a new version of the secret at `path` (created on first write). With `options.cas`, only if
    the current version matches."""
    return await service.write(session, keyring, target.at, target.actor, body, settings.default_max_versions)


@router.get("/secrets/{path:path}", response_model=SecretRead)
async def read_secret(
    session: SessionDep,
    keyring: KeyringDep,
    target: Annotated[Addressed, addressed("secrets:read")],
    version: Annotated[int | None, Query(ge=1, description="Default: the current version")] = None,
) -> SecretRead:
    """Read the value of a version (default: current). Every read is audited."""
    return await service.read(session, keyring, target.at, target.actor, version)


@router.delete("/secrets/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_latest(
    session: SessionDep, target: Annotated[Addressed, addressed("secrets:delete")]
) -> Response:
    """Soft-delete the current version; `undelete` brings it back."""
    await service.soft_delete(session, target.at, target.actor, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/delete/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_versions(
    body: VersionsSelection, session: SessionDep, target: Annotated[Addressed, addressed("secrets:delete")]
) -> Response:
    """Soft-delete the given versions."""
    await service.soft_delete(session, target.at, target.actor, body.versions)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/undelete/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def undelete_versions(
    body: VersionsSelection, session: SessionDep, target: Annotated[Addressed, addressed("secrets:delete")]
) -> Response:
    """Restore soft-deleted versions (destroyed ones stay destroyed)."""
    await service.undelete(session, target.at, target.actor, body.versions)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/destroy/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def destroy_versions(
    body: VersionsSelection, session: SessionDep, target: Annotated[Addressed, addressed("secrets:destroy")]
) -> Response:
    """Permanently erase the values of the given versions; their history remains."""
    await service.destroy(session, target.at, target.actor, body.versions)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/metadata", response_model=Page[PathRead])
async def list_secrets(
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:list")],
    params: PageDep,
    prefix: Annotated[str, Query(max_length=512)] = "",
    project: Annotated[ScopeName | None, Query()] = None,
    environment: Annotated[ScopeName | None, Query()] = None,
) -> Page[PathRead]:
    """List secret paths (never values), optionally under a prefix and in one scope."""
    query = service.paths_query(principal.org_id, project, environment, prefix)
    rows = await paginate(session, query, (Secret.project, Secret.environment, Secret.path), params)
    return rows.page(
        lambda s: PathRead(
            path=s.path,
            project=s.project,
            environment=s.environment,
            current_version=s.current_version,
            updated_time=s.updated_at,
        ),
    )


@router.get("/metadata/{path:path}", response_model=MetadataRead)
async def read_metadata(
    session: SessionDep, target: Annotated[Addressed, addressed("secrets:list")]
) -> MetadataRead:
    """The secret's settings and the state of every kept version (no values)."""
    return service.metadata_read(await service.metadata(session, target.at))


@router.patch("/metadata/{path:path}", response_model=MetadataRead)
async def update_metadata(
    body: MetadataUpdate, session: SessionDep, target: Annotated[Addressed, addressed("secrets:write")]
) -> MetadataRead:
    """Change max_versions, cas_required or custom_metadata."""
    return service.metadata_read(await service.update_metadata(session, target.at, target.actor, body))


@router.delete("/metadata/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_metadata(
    session: SessionDep, target: Annotated[Addressed, addressed("secrets:destroy")]
) -> Response:
    """Remove the secret with every version, for good."""
    await service.delete_all(session, target.at, target.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/keys/rewrap", response_model=RewrapRead)
async def rewrap_keys(
    session: SessionDep,
    keyring: KeyringDep,
    principal: Annotated[Principal, require("secrets:admin")],
) -> RewrapRead:
    """After a master-key rotation: rewrap this organization's data keys under the active key."""
    count = await service.rewrap(session, keyring, principal.org_id, principal.subject)
    return RewrapRead(rewrapped=count, active_key_id=keyring.active)


@router.get("/audit", response_model=Page[AuditEntryRead])
async def read_audit(
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:audit")],
    params: PageDep,
    path: Annotated[str | None, Query(max_length=512)] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
) -> Page[AuditEntryRead]:
    """The audit trail of this organization's secrets, newest first."""
    query = scoped(AuditEntry, principal.org_id)
    for column, value in ((AuditEntry.path, path), (AuditEntry.actor, actor), (AuditEntry.action, action)):
        if value is not None:
            query = query.where(column == value)
    rows = await paginate(session, query, (AuditEntry.at, AuditEntry.id), params, descending=True)
    return rows.page(AuditEntryRead.model_validate)
