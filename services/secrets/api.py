"""HTTP routes of `secrets` (Vault KV v2 style). Paths are relative to `/api/secrets` at the gateway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import select

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
from coder.shared.pagination import Page, PageDep, keyset, page

router = APIRouter(prefix="/v1", tags=["secrets"])

ProjectQ = Annotated[ScopeName, Query(description="Project scope; empty for organization-wide")]
EnvironmentQ = Annotated[ScopeName, Query(description="Environment scope, e.g. `production`")]


def _keyring(request: Request) -> tuple[Keyring, SecretsSettings]:
    settings = request.app.state.runtime.config(SecretsSettings)
    return Keyring(settings.keyring(), settings.active_key_id), settings


def _at(principal: Principal, path: str, project: str, environment: str) -> Location:
    return Location(principal.org_id, project, environment, path)


@router.put("/secrets/{path:path}", response_model=VersionRead, status_code=status.HTTP_200_OK)
async def write_secret(
    path: SecretPath,
    body: SecretWrite,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:write")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> VersionRead:
    """Write a new version of the secret at `path` (created on first write). With `options.cas`, only if
    the current version matches."""
    keyring, settings = _keyring(request)
    return await service.write(
        session,
        keyring,
        _at(principal, path, project, environment),
        principal.subject,
        body,
        settings.default_max_versions,
    )


@router.get("/secrets/{path:path}", response_model=SecretRead)
async def read_secret(
    path: SecretPath,
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:read")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
    version: Annotated[int | None, Query(ge=1, description="Default: the current version")] = None,
) -> SecretRead:
    """Read the value of a version (default: current). Every read is audited."""
    keyring, _ = _keyring(request)
    return await service.read(
        session, keyring, _at(principal, path, project, environment), principal.subject, version
    )


@router.delete("/secrets/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_latest(
    path: SecretPath,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:delete")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> Response:
    """Soft-delete the current version; `undelete` brings it back."""
    await service.soft_delete(session, _at(principal, path, project, environment), principal.subject, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/delete/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_versions(
    path: SecretPath,
    body: VersionsSelection,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:delete")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> Response:
    """Soft-delete the given versions."""
    await service.soft_delete(
        session, _at(principal, path, project, environment), principal.subject, body.versions
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/undelete/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def undelete_versions(
    path: SecretPath,
    body: VersionsSelection,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:delete")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> Response:
    """Restore soft-deleted versions (destroyed ones stay destroyed)."""
    await service.undelete(
        session, _at(principal, path, project, environment), principal.subject, body.versions
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/destroy/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def destroy_versions(
    path: SecretPath,
    body: VersionsSelection,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:destroy")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> Response:
    """Permanently erase the values of the given versions; their history remains."""
    await service.destroy(
        session, _at(principal, path, project, environment), principal.subject, body.versions
    )
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
    query = keyset(query, (Secret.project, Secret.environment, Secret.path), params)
    rows = (await session.execute(query)).scalars().all()
    return page(
        rows,
        params,
        key=lambda s: (s.project, s.environment, s.path),
        convert=lambda s: PathRead(
            path=s.path,
            project=s.project,
            environment=s.environment,
            current_version=s.current_version,
            updated_time=s.updated_at,
        ),
    )


@router.get("/metadata/{path:path}", response_model=MetadataRead)
async def read_metadata(
    path: SecretPath,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:list")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> MetadataRead:
    """The secret's settings and the state of every kept version (no values)."""
    return service.metadata_read(await service.metadata(session, _at(principal, path, project, environment)))


@router.patch("/metadata/{path:path}", response_model=MetadataRead)
async def update_metadata(
    path: SecretPath,
    body: MetadataUpdate,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:write")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> MetadataRead:
    """Change max_versions, cas_required or custom_metadata."""
    secret = await service.update_metadata(
        session, _at(principal, path, project, environment), principal.subject, body
    )
    return service.metadata_read(secret)


@router.delete("/metadata/{path:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_metadata(
    path: SecretPath,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:destroy")],
    project: ProjectQ = "",
    environment: EnvironmentQ = "",
) -> Response:
    """Remove the secret with every version, for good."""
    await service.delete_all(session, _at(principal, path, project, environment), principal.subject)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/keys/rewrap", response_model=RewrapRead)
async def rewrap_keys(
    request: Request,
    session: SessionDep,
    principal: Annotated[Principal, require("secrets:admin")],
) -> RewrapRead:
    """After a master-key rotation: rewrap this organization's data keys under the active key."""
    keyring, _ = _keyring(request)
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
    query = select(AuditEntry).where(AuditEntry.org_id == principal.org_id)
    for column, value in ((AuditEntry.path, path), (AuditEntry.actor, actor), (AuditEntry.action, action)):
        if value is not None:
            query = query.where(column == value)
    query = keyset(query, (AuditEntry.at, AuditEntry.id), params, descending=True)
    rows = (await session.execute(query)).scalars().all()
    return page(rows, params, key=lambda e: (e.at, str(e.id)), convert=AuditEntryRead.model_validate)
