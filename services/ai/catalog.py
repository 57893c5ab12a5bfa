"""Providers, deployments and model groups: the org's catalogue of models. Functions only flush."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.ai.models import Deployment, GroupMember, ModelGroup, Provider
from coder.services.ai.schemas import (
    DeploymentCreate,
    DeploymentRead,
    DeploymentUpdate,
    GroupCreate,
    GroupRead,
    GroupUpdate,
    ProviderCreate,
    ProviderKind,
    ProviderUpdate,
    Role,
    Routing,
)
from coder.shared.errors import Conflict, InvalidField
from coder.shared.repository import OrgScoped, scoped


def providers(session: AsyncSession, org_id: str) -> OrgScoped[Provider]:
    return OrgScoped(Provider, session, org_id, "provider")


def deployments(session: AsyncSession, org_id: str) -> OrgScoped[Deployment]:
    return OrgScoped(Deployment, session, org_id, "deployment")


def groups(session: AsyncSession, org_id: str) -> OrgScoped[ModelGroup]:
    return OrgScoped(ModelGroup, session, org_id, "model group")


async def _flush_unique(session: AsyncSession, field: str, value: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Conflict(f"{field} {value!r} is taken in this organization", field=field) from None


# --- providers ---


async def create_provider(session: AsyncSession, org_id: str, body: ProviderCreate) -> Provider:
    provider = Provider(
        org_id=org_id,
        name=body.name,
        kind=body.kind.value,
        base_url=str(body.base_url).rstrip("/"),
        key_path=body.key_path,
        key_field=body.key_field,
        external=body.external,
    )
    session.add(provider)
    await _flush_unique(session, "name", body.name)
    await session.refresh(provider)
    return provider


async def update_provider(
    session: AsyncSession, org_id: str, provider_id: uuid.UUID, body: ProviderUpdate
) -> Provider:
    provider = await providers(session, org_id).get(provider_id, Provider.id == provider_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    if "base_url" in changes:
        if body.base_url is None:
            raise InvalidField("base_url", "may not be null")
        provider.base_url = str(body.base_url).rstrip("/")
    if "key_path" in changes:
        provider.key_path = body.key_path  # null: the server needs no key
    if body.key_field is not None:
        provider.key_field = body.key_field
    if body.external is not None:
        provider.external = body.external
    await session.flush()
    await session.refresh(provider)
    return provider


async def delete_provider(session: AsyncSession, org_id: str, provider_id: uuid.UUID) -> None:
    provider = await providers(session, org_id).get(provider_id, Provider.id == provider_id, lock=True)
    used = await session.scalar(
        scoped(Deployment, org_id).where(Deployment.provider_id == provider.id).limit(1)
    )
    if used is not None:
        raise Conflict(f"deployment {used.name!r} uses this provider; delete it first")
    await session.delete(provider)
    await session.flush()


# --- deployments ---


async def create_deployment(session: AsyncSession, org_id: str, body: DeploymentCreate) -> Deployment:
    provider = await providers(session, org_id).find(Provider.id == body.provider_id)
    if provider is None:
        raise InvalidField("provider_id", f"no provider {body.provider_id}")
    deployment = Deployment(
        org_id=org_id,
        name=body.name,
        provider_id=provider.id,
        model=body.model,
        params=body.params,
        capabilities=[c.value for c in dict.fromkeys(body.capabilities)],
        context_window=body.context_window,
        max_output_tokens=body.max_output_tokens,
        input_price=body.input_price,
        output_price=body.output_price,
        cached_price=body.cached_price,
    )
    session.add(deployment)
    await _flush_unique(session, "name", body.name)
    await session.refresh(deployment)
    return deployment


async def update_deployment(
    session: AsyncSession, org_id: str, deployment_id: uuid.UUID, body: DeploymentUpdate
) -> Deployment:
    deployment = await deployments(session, org_id).get(
        deployment_id, Deployment.id == deployment_id, lock=True
    )
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            raise InvalidField(name, "may not be null")
        if name == "capabilities":
            value = list(dict.fromkeys(value))
        setattr(deployment, name, value)
    await session.flush()
    await session.refresh(deployment)
    return deployment


async def delete_deployment(session: AsyncSession, org_id: str, deployment_id: uuid.UUID) -> None:
    deployment = await deployments(session, org_id).get(
        deployment_id, Deployment.id == deployment_id, lock=True
    )
    used = await session.scalar(
        select(ModelGroup.alias)
        .join(GroupMember, GroupMember.group_id == ModelGroup.id)
        .where(GroupMember.deployment_id == deployment.id)
        .limit(1)
    )
    if used is not None:
        raise Conflict(f"model group {used!r} routes to this deployment; remove it from the group first")
    await session.delete(deployment)
    await session.flush()


def deployment_read(deployment: Deployment) -> DeploymentRead:
    return DeploymentRead.model_validate(deployment, from_attributes=True)


# --- model groups ---


async def members(session: AsyncSession, group_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each group's deployment ids, in order."""
    rows = (
        await session.execute(
            select(GroupMember.group_id, GroupMember.deployment_id)
            .where(GroupMember.group_id.in_(group_ids))
            .order_by(GroupMember.group_id, GroupMember.position)
        )
    ).all()
    out: dict[uuid.UUID, list[uuid.UUID]] = {g: [] for g in group_ids}
    for group_id, deployment_id in rows:
        out[group_id].append(deployment_id)
    return out


async def group_reads(session: AsyncSession, rows: Sequence[ModelGroup]) -> list[GroupRead]:
    found = await members(session, [g.id for g in rows])
    return [
        GroupRead(
            id=g.id,
            alias=g.alias,
            deployments=found[g.id],
            fallbacks=g.fallbacks,
            routing=Routing(g.routing),
            cheaper_on_budget=g.cheaper_on_budget,
            roles=[Role(r) for r in g.roles],
            created_at=g.created_at,
            updated_at=g.updated_at,
        )
        for g in rows
    ]


async def _set_members(
    session: AsyncSession, org_id: str, group: ModelGroup, deployment_ids: list[uuid.UUID]
) -> None:
    if len(set(deployment_ids)) != len(deployment_ids):
        raise InvalidField("deployments", "a deployment is listed twice")
    for index, deployment_id in enumerate(deployment_ids):
        if await deployments(session, org_id).find(Deployment.id == deployment_id) is None:
            raise InvalidField(f"deployments.{index}", f"no deployment {deployment_id}")
    current = (await session.execute(select(GroupMember).where(GroupMember.group_id == group.id))).scalars()
    for member in current:
        await session.delete(member)
    await session.flush()
    for position, deployment_id in enumerate(deployment_ids):
        session.add(
            GroupMember(group_id=group.id, position=position, org_id=org_id, deployment_id=deployment_id)
        )


def _check_fallbacks(alias: str, fallbacks: list[str]) -> list[str]:
    if alias in fallbacks:
        raise InvalidField("fallbacks", "a group cannot fall back to itself")
    if len(set(fallbacks)) != len(fallbacks):
        raise InvalidField("fallbacks", "an alias is listed twice")
    return fallbacks


async def create_group(session: AsyncSession, org_id: str, body: GroupCreate) -> ModelGroup:
    group = ModelGroup(
        org_id=org_id,
        alias=body.alias,
        routing=body.routing.value,
        cheaper_on_budget=body.cheaper_on_budget,
        fallbacks=_check_fallbacks(body.alias, body.fallbacks),
        roles=[r.value for r in dict.fromkeys(body.roles)],
    )
    session.add(group)
    await _flush_unique(session, "alias", body.alias)
    await _set_members(session, org_id, group, body.deployments)
    await session.flush()
    await session.refresh(group)
    return group


async def update_group(
    session: AsyncSession, org_id: str, group_id: uuid.UUID, body: GroupUpdate
) -> ModelGroup:
    group = await groups(session, org_id).get(group_id, ModelGroup.id == group_id, lock=True)
    changes = body.model_dump(exclude_unset=True)
    for name in changes:
        if getattr(body, name) is None:
            raise InvalidField(name, "may not be null")
    if body.deployments is not None:
        await _set_members(session, org_id, group, body.deployments)
    if body.fallbacks is not None:
        group.fallbacks = _check_fallbacks(group.alias, body.fallbacks)
    if body.routing is not None:
        group.routing = body.routing.value
    if body.cheaper_on_budget is not None:
        group.cheaper_on_budget = body.cheaper_on_budget
    if body.roles is not None:
        group.roles = [r.value for r in dict.fromkeys(body.roles)]
    await session.flush()
    await session.refresh(group)
    return group


@dataclass(frozen=True)
class Route:
    """A deployment a call may go to, with what the call needs to reach it."""

    deployment: Deployment
    provider: Provider
    group: str

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind(self.provider.kind)


Resolved = tuple[ModelGroup, list[Route]]


async def resolve(session: AsyncSession, org_id: str, alias: str) -> Resolved | None:
    """A group and its routes: its own deployments (ordered per its routing), then each fallback
    group's in turn (one level: a fallback's own fallbacks are not followed)."""
    group = await groups(session, org_id).find(ModelGroup.alias == alias)
    if group is None:
        return None
    chain = [group]
    for fallback_alias in group.fallbacks:
        fallback = await groups(session, org_id).find(ModelGroup.alias == fallback_alias)
        if fallback is not None:
            chain.append(fallback)
    found = await members(session, [g.id for g in chain])
    ids = {d for ds in found.values() for d in ds}
    rows = (await session.execute(scoped(Deployment, org_id).where(Deployment.id.in_(ids)))).scalars()
    by_id = {d.id: d for d in rows}
    provider_rows = (
        await session.execute(
            scoped(Provider, org_id).where(Provider.id.in_({d.provider_id for d in by_id.values()}))
        )
    ).scalars()
    provider_by_id = {p.id: p for p in provider_rows}
    routes: list[Route] = []
    for g in chain:
        members_of = [by_id[d] for d in found[g.id] if d in by_id]
        if g.routing == Routing.CHEAPEST.value:
            members_of.sort(key=lambda d: (d.input_price + d.output_price, d.input_price))
        routes += [Route(d, provider_by_id[d.provider_id], g.alias) for d in members_of]
    return group, routes
