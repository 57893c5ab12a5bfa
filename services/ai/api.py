"""HTTP routes of `ai`. Paths are relative to `/api/ai` at the gateway: an OpenAI SDK takes
`<gateway>/api/ai/v1` as its base_url, an Anthropic one `<gateway>/api/ai`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, status
from pydantic import BaseModel, Field

from coder.services.ai import catalog, health
from coder.services.ai.calls import Call, Platform, call_model, routing_changed
from coder.services.ai.context import SOURCES, ContextQuery, ContextRead, assemble
from coder.services.ai.models import Deployment, ModelGroup, Provider
from coder.services.ai.providers import Api
from coder.services.ai.schemas import (
    Capability,
    DeploymentCreate,
    DeploymentRead,
    DeploymentUpdate,
    GroupCreate,
    GroupRead,
    GroupUpdate,
    HealthRead,
    ProviderCreate,
    ProviderRead,
    ProviderUpdate,
    Role,
)
from coder.services.ai.wire import ChatRequest, CompletionRequest, MessagesRequest
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import CacheDep, ClientsDep
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["ai"])


async def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.ai
    return platform


PlatformDep = Annotated[Platform, Depends(_platform)]


async def _routing_changed(request: Request) -> AsyncIterator[None]:
    """Declared on every catalogue write, before its session: runs on after the write committed, and
    tells every replica's routing cache (calls.plan) to read the catalogue again."""
    yield
    platform: Platform = request.app.state.ai
    await routing_changed(platform)


# In the decorator, so it is set up first and torn down last: after the request's commit.
CHANGES_ROUTING = Depends(_routing_changed, scope="function")
Reader = Annotated[Principal, require("ai:read")]
Admin = Annotated[Principal, require("ai:admin")]
User = Annotated[Principal, require("ai:use")]
Feature = Annotated[
    str | None,
    Header(
        alias="x-coder-feature", max_length=128, description="What the call is for (chat, autocomplete...)"
    ),
]

# The inference routes answer in the providers' shapes; 402 passes usage's refusal on (naming the
# budget), 502 a provider's key that cannot be read, 503 no deployment able to answer.
CALL_PROBLEMS = problem_responses({402, 404, 502, 503})


# --- providers ---


@router.post(
    "/providers",
    response_model=ProviderRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
    dependencies=[CHANGES_ROUTING],
)
async def create_provider(body: ProviderCreate, session: SessionDep, principal: Admin) -> ProviderRead:
    """Register a provider: OpenAI, Anthropic, or any OpenAI-compatible server (Ollama, vLLM, LM Studio).
    Its API key stays in `secrets` (`key_path`); it is read for each caller and never returned."""
    return ProviderRead.model_validate(
        await catalog.create_provider(session, principal.org_id, body), from_attributes=True
    )


@router.get("/providers", response_model=Page[ProviderRead])
async def list_providers(session: SessionDep, principal: Reader, params: PageDep) -> Page[ProviderRead]:
    """The organization's providers, by name."""
    rows = await paginate(session, scoped(Provider, principal.org_id), (Provider.name,), params)
    return rows.page(lambda p: ProviderRead.model_validate(p, from_attributes=True))


@router.get("/providers/{provider_id}", response_model=ProviderRead)
async def read_provider(provider_id: uuid.UUID, session: SessionDep, principal: Reader) -> ProviderRead:
    """One provider (its key's location, never the key)."""
    provider = await catalog.providers(session, principal.org_id).get(provider_id, Provider.id == provider_id)
    return ProviderRead.model_validate(provider, from_attributes=True)


@router.patch("/providers/{provider_id}", response_model=ProviderRead, dependencies=[CHANGES_ROUTING])
async def update_provider(
    provider_id: uuid.UUID, body: ProviderUpdate, session: SessionDep, principal: Admin
) -> ProviderRead:
    """Change a provider's address, key location or whether it is external."""
    provider = await catalog.update_provider(session, principal.org_id, provider_id, body)
    return ProviderRead.model_validate(provider, from_attributes=True)


@router.delete(
    "/providers/{provider_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
    dependencies=[CHANGES_ROUTING],
)
async def delete_provider(provider_id: uuid.UUID, session: SessionDep, principal: Admin) -> Response:
    """Remove a provider no deployment uses (409 names one that does)."""
    await catalog.delete_provider(session, principal.org_id, provider_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- deployments ---


@router.post(
    "/deployments",
    response_model=DeploymentRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
    dependencies=[CHANGES_ROUTING],
)
async def create_deployment(body: DeploymentCreate, session: SessionDep, principal: Admin) -> DeploymentRead:
    """A model at a provider: its parameters, capabilities, context window and prices per million tokens."""
    return catalog.deployment_read(await catalog.create_deployment(session, principal.org_id, body))


@router.get("/deployments", response_model=Page[DeploymentRead])
async def list_deployments(session: SessionDep, principal: Reader, params: PageDep) -> Page[DeploymentRead]:
    """The organization's deployments, by name."""
    rows = await paginate(session, scoped(Deployment, principal.org_id), (Deployment.name,), params)
    return rows.page(catalog.deployment_read)


@router.get("/deployments/{deployment_id}", response_model=DeploymentRead)
async def read_deployment(deployment_id: uuid.UUID, session: SessionDep, principal: Reader) -> DeploymentRead:
    """One deployment."""
    deployment = await catalog.deployments(session, principal.org_id).get(
        deployment_id, Deployment.id == deployment_id
    )
    return catalog.deployment_read(deployment)


@router.patch("/deployments/{deployment_id}", response_model=DeploymentRead, dependencies=[CHANGES_ROUTING])
async def update_deployment(
    deployment_id: uuid.UUID, body: DeploymentUpdate, session: SessionDep, principal: Admin
) -> DeploymentRead:
    """Change a deployment's model, parameters, capabilities, limits or prices."""
    return catalog.deployment_read(
        await catalog.update_deployment(session, principal.org_id, deployment_id, body)
    )


@router.delete(
    "/deployments/{deployment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
    dependencies=[CHANGES_ROUTING],
)
async def delete_deployment(deployment_id: uuid.UUID, session: SessionDep, principal: Admin) -> Response:
    """Remove a deployment no model group routes to (409 names one that does)."""
    await catalog.delete_deployment(session, principal.org_id, deployment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/deployments/{deployment_id}/health", response_model=HealthRead)
async def read_health(
    deployment_id: uuid.UUID, session: SessionDep, cache: CacheDep, principal: Reader
) -> HealthRead:
    """A deployment's health as every replica sees it: healthy, unhealthy (the last background check
    or call failed), cooldown (resting after a failure, with the seconds left) or unknown."""
    deployment = await catalog.deployments(session, principal.org_id).get(
        deployment_id, Deployment.id == deployment_id
    )
    (state,) = await health.states(cache, [deployment.id])
    return health.health_read(deployment, state)


@router.get("/health", response_model=Page[HealthRead])
async def list_health(
    session: SessionDep, cache: CacheDep, principal: Reader, params: PageDep
) -> Page[HealthRead]:
    """Every deployment's health, by deployment name."""
    rows = await paginate(session, scoped(Deployment, principal.org_id), (Deployment.name,), params)
    states = await health.states(cache, [d.id for d in rows.items])
    return Page[HealthRead](
        items=[health.health_read(d, s) for d, s in zip(rows.items, states, strict=True)],
        next_cursor=rows.next_cursor,
    )


# --- model groups ---


@router.post(
    "/groups",
    response_model=GroupRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
    dependencies=[CHANGES_ROUTING],
)
async def create_group(body: GroupCreate, session: SessionDep, principal: Admin) -> GroupRead:
    """An alias clients call as `model`: its deployments in routing order, the groups it falls back to."""
    group = await catalog.create_group(session, principal.org_id, body)
    return (await catalog.group_reads(session, [group]))[0]


@router.get("/groups", response_model=Page[GroupRead])
async def list_groups(session: SessionDep, principal: Reader, params: PageDep) -> Page[GroupRead]:
    """The organization's model groups, by alias."""
    rows = await paginate(session, scoped(ModelGroup, principal.org_id), (ModelGroup.alias,), params)
    return Page[GroupRead](items=await catalog.group_reads(session, rows.items), next_cursor=rows.next_cursor)


@router.get("/groups/{group_id}", response_model=GroupRead)
async def read_group(group_id: uuid.UUID, session: SessionDep, principal: Reader) -> GroupRead:
    """One model group."""
    group = await catalog.groups(session, principal.org_id).get(group_id, ModelGroup.id == group_id)
    return (await catalog.group_reads(session, [group]))[0]


@router.patch("/groups/{group_id}", response_model=GroupRead, dependencies=[CHANGES_ROUTING])
async def update_group(
    group_id: uuid.UUID, body: GroupUpdate, session: SessionDep, principal: Admin
) -> GroupRead:
    """Change a group's deployments, fallbacks, routing or roles."""
    group = await catalog.update_group(session, principal.org_id, group_id, body)
    return (await catalog.group_reads(session, [group]))[0]


@router.delete("/groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[CHANGES_ROUTING])
async def delete_group(group_id: uuid.UUID, session: SessionDep, principal: Admin) -> Response:
    """Remove a model group (its deployments stay)."""
    await catalog.groups(session, principal.org_id).delete(group_id, ModelGroup.id == group_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- inference (OpenAI and Anthropic shapes) ---


class ModelRead(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelRead]


@router.get("/models", response_model=ModelList)
async def list_models(session: SessionDep, principal: User) -> ModelList:
    """The model aliases the caller can call (OpenAI's model list): the organization's model groups."""
    groups = (
        await session.execute(scoped(ModelGroup, principal.org_id).order_by(ModelGroup.alias))
    ).scalars()
    return ModelList(
        data=[
            ModelRead(id=g.alias, created=int(g.created_at.timestamp()), owned_by=principal.org_id)
            for g in groups
        ]
    )


def _body(model: BaseModel, *exclude: str) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=True, exclude=set(exclude))


@router.post("/chat/completions", responses=CALL_PROBLEMS)
async def chat_completions(
    body: ChatRequest, platform: PlatformDep, principal: User, feature: Feature = None
) -> Response:
    """OpenAI chat completion, streamed (SSE, usage and `usage.cost` in the last chunk when
    `stream_options.include_usage`) or not. Tools and response_format pass through to the provider."""
    started = time.monotonic()
    call = Call(Api.CHAT, _body(body, "context"), principal, feature, started, body.context)
    return await call_model(platform, call)


@router.post("/completions", responses=CALL_PROBLEMS)
async def completions(
    body: CompletionRequest, platform: PlatformDep, principal: User, feature: Feature = None
) -> Response:
    """OpenAI text completion for code: fill-in-the-middle with `prompt` and `suffix`."""
    started = time.monotonic()
    return await call_model(platform, Call(Api.COMPLETIONS, _body(body), principal, feature, started))


@router.post("/messages", responses=CALL_PROBLEMS)
async def messages(
    body: MessagesRequest, platform: PlatformDep, principal: User, feature: Feature = None
) -> Response:
    """Anthropic messages, streamed (message_start ... message_stop, `usage.cost` in message_delta) or not."""
    started = time.monotonic()
    return await call_model(platform, Call(Api.MESSAGES, _body(body), principal, feature, started))


# --- the IDE: context and start-up configuration ---


@router.post("/context", response_model=ContextRead)
async def build_context(body: ContextQuery, principal: User, clients: ClientsDep) -> ContextRead:
    """Assemble context for a query from the client's items (selection, diagnostics, open files) and
    the named sources, within `max_tokens`, each piece with its citation. With `external` (the
    default), private items and sources are left out; `left_out` says what and why."""
    return await assemble(principal, body, clients)


class RoleModel(BaseModel):
    alias: str
    capabilities: list[Capability] = Field(description="What every deployment of the group can do")
    context_window: int = Field(description="The smallest of the group's deployments")


class SourceRead(BaseModel):
    name: str
    description: str
    private: bool


class Limits(BaseModel):
    context_max_tokens: int
    request_max_messages: int


class ConfigRead(BaseModel):
    user_id: str
    org_id: str
    models: dict[Role, list[RoleModel]] = Field(description="Model groups by the IDE role they serve")
    context_sources: list[SourceRead]
    mcp_url: str = Field(description="The platform's MCP endpoint, relative to the gateway")
    limits: Limits


@router.get("/config", response_model=ConfigRead)
async def read_config(session: SessionDep, principal: User) -> ConfigRead:
    """The IDE's start-up call: the caller's model groups by role (chat, autocomplete, embed, edit),
    the context sources it may name, the MCP endpoint and the limits."""
    groups = list(
        (await session.execute(scoped(ModelGroup, principal.org_id).order_by(ModelGroup.alias))).scalars()
    )
    found = await catalog.members(session, [g.id for g in groups])
    ids = {d for ds in found.values() for d in ds}
    deployments = {
        d.id: d
        for d in (
            await session.execute(scoped(Deployment, principal.org_id).where(Deployment.id.in_(ids)))
        ).scalars()
    }
    models: dict[Role, list[RoleModel]] = {role: [] for role in Role}
    for group in groups:
        members = [deployments[d] for d in found[group.id] if d in deployments]
        if not members:
            continue
        common = set.intersection(*(set(d.capabilities) for d in members))
        entry = RoleModel(
            alias=group.alias,
            capabilities=sorted(Capability(c) for c in common),
            context_window=min(d.context_window for d in members),
        )
        for role in group.roles:
            models[Role(role)].append(entry)
    sources = [
        SourceRead(
            name="client", description="Items the IDE sends: selection, diagnostics, files", private=False
        )
    ]
    sources += [
        SourceRead(name=s.name, description=s.description, private=s.private) for s in SOURCES.values()
    ]
    return ConfigRead(
        user_id=principal.subject,
        org_id=principal.org_id,
        models=models,
        context_sources=sources,
        mcp_url="/api/mcp/mcp",
        limits=Limits(context_max_tokens=1_000_000, request_max_messages=10_000),
    )
