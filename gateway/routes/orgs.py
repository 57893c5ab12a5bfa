"""Organizations: members and their roles, invitations, custom roles, the audit log.

Everything under `/api/orgs/{org_id}` acts in the organization the token names; any other id is 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from coder.gateway import roles, service
from coder.gateway.deps import ActorDep, GatewayDep
from coder.gateway.models import AuditEntry, Invitation, Membership, User
from coder.gateway.schemas import (
    AuditEntryRead,
    InvitationCreate,
    InvitationCreated,
    InvitationRead,
    JoinRequest,
    MemberRead,
    MembershipSummary,
    MemberUpdate,
    OrgCreate,
    OrgRead,
    OrgUpdate,
    RoleCreate,
    RoleRead,
    RoleUpdate,
)
from coder.shared.db import SessionDep
from coder.shared.errors import Unauthorized, problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped
from coder.shared.schemas import StorableTime

router = APIRouter(prefix="/api/orgs", tags=["organizations"])


@router.get("", response_model=list[MembershipSummary])
async def list_orgs(session: SessionDep, actor: ActorDep) -> list[MembershipSummary]:
    """The organizations you belong to, with your role in each (refresh with `org_id` to switch)."""
    return [
        MembershipSummary(org_id=org.id, org_name=org.name, org_slug=org.slug, role=m.role)
        for org, m in await service.memberships(session, actor.user_id)
    ]


@router.post(
    "", response_model=OrgRead, status_code=status.HTTP_201_CREATED, responses=problem_responses({409})
)
async def create_org(body: OrgCreate, session: SessionDep, actor: ActorDep) -> OrgRead:
    """Found an organization; you become its owner. Needs `gateway:account.write`."""
    actor.require(roles.ACCOUNT_WRITE)
    if await session.get(User, actor.user_id) is None:
        raise Unauthorized("the account no longer exists", slug="unknown-user")
    return OrgRead.model_validate(
        await service.create_org(session, actor.user_id, body.name, body.slug, actor.ip)
    )


@router.post(
    "/join",
    response_model=MemberRead,
    status_code=status.HTTP_201_CREATED,
    # Unknown invitation; addressed to someone else; already used or already a member.
    responses=problem_responses({403, 404, 409}),
)
async def join_org(body: JoinRequest, session: SessionDep, actor: ActorDep) -> MemberRead:
    """Accept an invitation addressed to your email address. Needs `gateway:account.write`."""
    actor.require(roles.ACCOUNT_WRITE)
    user = await session.get(User, actor.user_id)
    if user is None:
        raise Unauthorized("the account no longer exists", slug="unknown-user")
    joined = await service.accept_invitation(session, user, body.invitation, "invitation")
    return service.member_read(joined, user)


@router.get("/{org_id}", response_model=OrgRead)
async def read_org(org_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> OrgRead:
    """The organization the token acts in."""
    return OrgRead.model_validate(await service.get_org(session, actor, org_id))


@router.patch("/{org_id}", response_model=OrgRead)
async def update_org(org_id: uuid.UUID, body: OrgUpdate, session: SessionDep, actor: ActorDep) -> OrgRead:
    """Rename the organization (admins)."""
    actor.in_org(org_id)
    actor.require(roles.ORG_WRITE)
    return OrgRead.model_validate(await service.update_org(session, actor, org_id, body.name))


@router.get("/{org_id}/members", response_model=Page[MemberRead])
async def list_members(
    org_id: uuid.UUID, session: SessionDep, actor: ActorDep, params: PageDep
) -> Page[MemberRead]:
    """The organization's members with their roles, oldest first."""
    actor.in_org(org_id)
    actor.require(roles.MEMBERS_READ)
    query = service.members_query(org_id)
    rows = await paginate(session, query, (Membership.created_at, Membership.user_id), params)
    return rows.page(lambda r: service.member_read(*r))


@router.patch("/{org_id}/members/{user_id}", response_model=MemberRead, responses=problem_responses({409}))
async def change_member_role(
    org_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberUpdate,
    session: SessionDep,
    gateway: GatewayDep,
    actor: ActorDep,
) -> MemberRead:
    """Give a member another role (admins; owners only for the owner role). Their current tokens stop
    working at the gateway; a refresh picks up the new role."""
    member = await service.change_role(session, actor, org_id, user_id, body.role)
    await gateway.revocations.outdate(org_id, [user_id])
    return member


@router.delete(
    "/{org_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses({409}),
)
async def remove_member(
    org_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, gateway: GatewayDep, actor: ActorDep
) -> Response:
    """Remove a member (admins), or leave (your own id; needs `gateway:account.write`). Their tokens
    for this organization and their personal access tokens here stop working at once."""
    await service.remove_member(session, actor, org_id, user_id)
    await gateway.revocations.outdate(org_id, [user_id])
    gateway.forget_personal()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/invitations", response_model=Page[InvitationRead])
async def list_invitations(
    org_id: uuid.UUID, session: SessionDep, actor: ActorDep, params: PageDep
) -> Page[InvitationRead]:
    """Invitations of the organization, newest first (admins)."""
    actor.in_org(org_id)
    actor.require(roles.INVITATIONS_WRITE)
    query = scoped(Invitation, org_id)
    rows = await paginate(session, query, (Invitation.created_at, Invitation.id), params, descending=True)
    return rows.page(InvitationRead.model_validate)


@router.post(
    "/{org_id}/invitations",
    response_model=InvitationCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def invite(
    org_id: uuid.UUID, body: InvitationCreate, session: SessionDep, gateway: GatewayDep, actor: ActorDep
) -> InvitationCreated:
    """Invite someone by email with a role. The invitation token is shown only here: the invitee signs
    up with it, or (already a user) joins with `POST /api/orgs/join`."""
    invitation, token = await service.invite(
        session, actor, org_id, body, gateway.settings.invitation_ttl_seconds
    )
    return InvitationCreated(**InvitationRead.model_validate(invitation).model_dump(), token=token)


@router.delete("/{org_id}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_invitation(
    org_id: uuid.UUID, invitation_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> Response:
    """Withdraw an invitation that was not accepted yet."""
    await service.revoke_invitation(session, actor, org_id, invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/roles", response_model=list[RoleRead])
async def list_roles(org_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> list[RoleRead]:
    """Built-in and custom roles with the permissions each grants."""
    actor.in_org(org_id)
    actor.require(roles.MEMBERS_READ)
    return await service.list_roles(session, org_id)


@router.post(
    "/{org_id}/roles",
    response_model=RoleRead,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses({409}),
)
async def create_role(org_id: uuid.UUID, body: RoleCreate, session: SessionDep, actor: ActorDep) -> RoleRead:
    """A custom role: a name for `<target>:<action>` patterns (`<target>:*` for every action)."""
    actor.in_org(org_id)
    actor.require(roles.ROLES_WRITE)
    return await service.create_role(session, actor, body)


@router.patch("/{org_id}/roles/{name}", response_model=RoleRead)
async def update_role(
    org_id: uuid.UUID, name: str, body: RoleUpdate, session: SessionDep, gateway: GatewayDep, actor: ActorDep
) -> RoleRead:
    """Change a custom role; members holding it get the new permissions at their next refresh (their
    current tokens stop working at the gateway)."""
    actor.in_org(org_id)
    actor.require(roles.ROLES_WRITE)
    role, holders = await service.update_role(session, actor, name, body)
    await gateway.revocations.outdate(org_id, holders)
    return role


@router.delete(
    "/{org_id}/roles/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses({409})
)
async def delete_role(org_id: uuid.UUID, name: str, session: SessionDep, actor: ActorDep) -> Response:
    """Delete a custom role nobody holds any more."""
    actor.in_org(org_id)
    actor.require(roles.ROLES_WRITE)
    await service.delete_role(session, actor, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{org_id}/audit", response_model=Page[AuditEntryRead])
async def read_audit(
    org_id: uuid.UUID,
    session: SessionDep,
    actor: ActorDep,
    params: PageDep,
    actor_id: Annotated[uuid.UUID | None, Query(description="Only acts of this user")] = None,
    action: Annotated[
        str | None,
        Query(max_length=64, description="An action (`member.role_changed`) or a prefix (`member.`)"),
    ] = None,
    resource_type: Annotated[str | None, Query(max_length=32)] = None,
    resource_id: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[
        datetime | None, StorableTime, Query(description="From this time on (inclusive)")
    ] = None,
    until: Annotated[datetime | None, StorableTime, Query(description="Before this time")] = None,
) -> Page[AuditEntryRead]:
    """Every administrative act in the organization, newest first, filterable (admins)."""
    actor.in_org(org_id)
    actor.require(roles.AUDIT_READ)
    query = service.audit_query(
        org_id,
        actor_id=actor_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
    )
    rows = await paginate(session, query, (AuditEntry.at, AuditEntry.id), params, descending=True)
    return rows.page(AuditEntryRead.model_validate)
