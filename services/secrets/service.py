"""The secrets domain: every function is org-scoped by its `Location` and only flushes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from coder.services.secrets.crypto import Keyring, KeyringError, Sealed
from coder.services.secrets.models import AuditEntry, Base, Secret, SecretVersion
from coder.services.secrets.schemas import (
    MAX_VALUE_BYTES,
    MetadataRead,
    MetadataUpdate,
    SecretRead,
    SecretWrite,
    VersionRead,
)
from coder.shared import context
from coder.shared.contracts.secrets import SecretFingerprinted, fingerprints
from coder.shared.errors import Conflict, InvalidField, NotFound, Problem
from coder.shared.repository import owned_by, scoped


class SecretsProblem(Problem):
    slug, title = "secrets", "Secrets error"


class VersionGone(SecretsProblem):
    status, slug, title = 404, "secret-version-gone", "Secret version deleted or destroyed"


@dataclass(frozen=True)
class Location:
    org_id: str
    project: str
    environment: str
    path: str

    def aad(self, version: int) -> bytes:
        """Associated data binding a ciphertext to exactly one place and version."""
        return json.dumps([self.org_id, self.project, self.environment, self.path, version]).encode()


def _now() -> datetime:
    return datetime.now(UTC)


async def _audit(
    session: AsyncSession,
    where: Location,
    actor: str,
    action: str,
    version: int | None = None,
    **details: Any,
) -> None:
    session.add(
        AuditEntry(
            org_id=where.org_id,
            actor=actor,
            action=action,
            project=where.project,
            environment=where.environment,
            path=where.path,
            version=version,
            request_id=context.request_id.get(),
            details=details,
        )
    )


async def _find(session: AsyncSession, where: Location, *, lock: bool = False) -> Secret | None:
    query = (
        scoped(Secret, where.org_id)
        .where(
            Secret.project == where.project,
            Secret.environment == where.environment,
            Secret.path == where.path,
        )
        .options(selectinload(Secret.versions))
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _get(session: AsyncSession, where: Location, *, lock: bool = False) -> Secret:
    secret = await _find(session, where, lock=lock)
    if secret is None:
        raise NotFound(f"no secret at {where.path}")
    return secret


def _version_read(v: SecretVersion) -> VersionRead:
    return VersionRead(
        version=v.version,
        created_time=v.created_at,
        created_by=v.created_by,
        deletion_time=v.deleted_at,
        destroyed=v.destroyed,
    )


def metadata_read(secret: Secret) -> MetadataRead:
    return MetadataRead(
        path=secret.path,
        project=secret.project,
        environment=secret.environment,
        current_version=secret.current_version,
        oldest_version=secret.oldest_version,
        max_versions=secret.max_versions,
        cas_required=secret.cas_required,
        custom_metadata=secret.custom_metadata,
        created_time=secret.created_at,
        updated_time=secret.updated_at,
        versions={str(v.version): _version_read(v) for v in secret.versions},
    )


async def write(
    session: AsyncSession,
    keyring: Keyring,
    where: Location,
    actor: str,
    body: SecretWrite,
    default_max_versions: int,
) -> VersionRead:
    plaintext = json.dumps(body.data, separators=(",", ":")).encode()
    if len(plaintext) > MAX_VALUE_BYTES:
        raise InvalidField("data", f"larger than {MAX_VALUE_BYTES} bytes once encoded", status=413)
    # Create-if-absent, then lock: concurrent writers to one path queue up instead of colliding.
    await session.execute(
        insert(Secret)
        .values(
            org_id=where.org_id,
            project=where.project,
            environment=where.environment,
            path=where.path,
            max_versions=default_max_versions,
            custom_metadata={},
        )
        .on_conflict_do_nothing(index_elements=["org_id", "project", "environment", "path"])
    )
    secret = await _get(session, where, lock=True)
    cas = body.options.cas
    if secret.cas_required and cas is None:
        raise InvalidField("options.cas", "this secret requires check-and-set: pass options.cas")
    if cas is not None and cas != secret.current_version:
        raise Conflict(
            f"check-and-set failed: current version is {secret.current_version}, not {cas}",
            slug="cas-mismatch",
            current_version=secret.current_version,
            errors=[{"field": "options.cas", "message": "does not match the current version"}],
        )
    version = secret.current_version + 1
    sealed = keyring.seal(plaintext, where.aad(version))
    entry = SecretVersion(
        version=version,
        ciphertext=sealed.ciphertext,
        wrapped_key=sealed.wrapped_key,
        key_id=sealed.key_id,
        created_by=actor,
        destroyed=False,
    )
    secret.versions.append(entry)
    secret.current_version = version
    secret.updated_at = _now()
    _prune(secret)
    await session.flush()
    await _audit(session, where, actor, "write", version)
    # Fingerprints, never values: logging redacts a line's token whose keyed hash is among them.
    found = fingerprints(where.org_id, body.data)
    if found:
        await Base.events.publish(
            session,
            "secrets.secret.fingerprinted",
            SecretFingerprinted(path=where.path, version=version, fingerprints=found).model_dump(),
            org_id=where.org_id,
            subject=where.path,
        )
    if version > 1:
        await Base.events.publish(
            session,
            "secrets.secret.rotated",
            {
                "project": where.project,
                "environment": where.environment,
                "path": where.path,
                "version": version,
            },
            org_id=where.org_id,
            subject=where.path,
        )
    await session.flush()
    return _version_read(entry)


def _prune(secret: Secret) -> None:
    """Keep at most max_versions versions: older ones are removed for good, as Vault does."""
    keep_from = secret.current_version - secret.max_versions + 1
    if keep_from > secret.oldest_version:
        secret.versions[:] = [v for v in secret.versions if v.version >= keep_from]
        secret.oldest_version = keep_from


async def read(
    session: AsyncSession, keyring: Keyring, where: Location, actor: str, version: int | None
) -> SecretRead:
    secret = await _get(session, where)
    wanted = version or secret.current_version
    entry = next((v for v in secret.versions if v.version == wanted), None)
    if entry is None:
        raise NotFound(f"{where.path} has no version {wanted}")
    if (
        entry.destroyed
        or entry.deleted_at is not None
        or entry.ciphertext is None
        or entry.wrapped_key is None
    ):
        raise VersionGone(
            f"version {wanted} of {where.path} is {'destroyed' if entry.destroyed else 'deleted'}",
            metadata=_version_read(entry).model_dump(mode="json"),
        )
    assert entry.key_id is not None
    try:
        plaintext = keyring.open(Sealed(entry.ciphertext, entry.wrapped_key, entry.key_id), where.aad(wanted))
    except KeyringError as exc:
        raise Problem(
            str(exc), status=500, slug="secrets-key-unavailable", title="Secret cannot be decrypted"
        ) from None
    await _audit(session, where, actor, "read", wanted)
    return SecretRead(data=json.loads(plaintext), metadata=_version_read(entry))


def _selected(secret: Secret, versions: list[int]) -> list[SecretVersion]:
    by_number = {v.version: v for v in secret.versions}
    missing = sorted(set(versions) - set(by_number))
    if missing:
        raise InvalidField("versions", f"no such versions: {', '.join(map(str, missing))}", status=404)
    return [by_number[n] for n in sorted(set(versions))]


async def soft_delete(session: AsyncSession, where: Location, actor: str, versions: list[int] | None) -> None:
    secret = await _get(session, where, lock=True)
    chosen = _selected(secret, versions or [secret.current_version])
    for entry in chosen:
        if entry.deleted_at is None and not entry.destroyed:
            entry.deleted_at = _now()
    await _audit(session, where, actor, "delete", details={"versions": [v.version for v in chosen]})
    await session.flush()


async def undelete(session: AsyncSession, where: Location, actor: str, versions: list[int]) -> None:
    secret = await _get(session, where, lock=True)
    chosen = _selected(secret, versions)
    for entry in chosen:
        if not entry.destroyed:
            entry.deleted_at = None
    await _audit(session, where, actor, "undelete", details={"versions": [v.version for v in chosen]})
    await session.flush()


async def destroy(session: AsyncSession, where: Location, actor: str, versions: list[int]) -> None:
    secret = await _get(session, where, lock=True)
    chosen = _selected(secret, versions)
    for entry in chosen:
        entry.destroyed = True
        entry.ciphertext = entry.wrapped_key = entry.key_id = None
    await _audit(session, where, actor, "destroy", details={"versions": [v.version for v in chosen]})
    await session.flush()


async def delete_all(session: AsyncSession, where: Location, actor: str) -> None:
    secret = await _get(session, where, lock=True)
    await session.delete(secret)
    await _audit(session, where, actor, "delete-metadata", details={"versions": secret.current_version})
    await session.flush()


async def update_metadata(session: AsyncSession, where: Location, actor: str, body: MetadataUpdate) -> Secret:
    secret = await _get(session, where, lock=True)
    changes = body.model_dump(exclude_none=True)
    for name, value in changes.items():
        setattr(secret, name, value)
    secret.updated_at = _now()
    _prune(secret)
    await _audit(session, where, actor, "update-metadata", details={"fields": sorted(changes)})
    await session.flush()
    return secret


async def metadata(session: AsyncSession, where: Location) -> Secret:
    return await _get(session, where)


async def rewrap(session: AsyncSession, keyring: Keyring, org_id: str, actor: str, batch: int = 500) -> int:
    """Rewrap every data key of the org under the active master key (values are not re-encrypted)."""
    count = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(SecretVersion)
                    .join(Secret)
                    .where(
                        owned_by(Secret, org_id),
                        SecretVersion.key_id.is_not(None),
                        SecretVersion.key_id != keyring.active,
                    )
                    .limit(batch)
                    .with_for_update(of=SecretVersion)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        for entry in rows:
            assert entry.ciphertext is not None
            assert entry.wrapped_key is not None
            assert entry.key_id is not None
            sealed = keyring.rewrap(Sealed(entry.ciphertext, entry.wrapped_key, entry.key_id))
            await session.execute(
                update(SecretVersion)
                .where(SecretVersion.secret_id == entry.secret_id, SecretVersion.version == entry.version)
                .values(wrapped_key=sealed.wrapped_key, key_id=sealed.key_id)
            )
        count += len(rows)
        session.expunge_all()
    session.add(
        AuditEntry(
            org_id=org_id,
            actor=actor,
            action="rewrap",
            project="",
            environment="",
            path="*",
            request_id=context.request_id.get(),
            details={"rewrapped": count, "key_id": keyring.active},
        )
    )
    await session.flush()
    return count


def paths_query(org_id: str, project: str | None, environment: str | None, prefix: str) -> Any:
    query = scoped(Secret, org_id)
    if project is not None:
        query = query.where(Secret.project == project)
    if environment is not None:
        query = query.where(Secret.environment == environment)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Secret.path.like(escaped + "%", escape="\\"))
    return query
