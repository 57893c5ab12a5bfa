"""Organizations, memberships, invitations, roles, teams and the audit log.

Every function acts for an `Actor` inside the actor's organization and only flushes; the request's
transaction commits. Rows of another organization are simply not found (404), never forbidden.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.gateway import roles
from coder.gateway.models import (
    AuditEntry,
    Invitation,
    Membership,
    Org,
    PersonalToken,
    Role,
    Team,
    TeamMember,
    User,
)
from coder.gateway.schemas import (
    InvitationCreate,
    MemberRead,
    RoleCreate,
    RoleRead,
    RoleUpdate,
    TeamCreate,
    TeamMemberRead,
    TeamUpdate,
)
from coder.gateway.tokens import INVITATION_PREFIX, digest, new_secret
from coder.runner import registry
from coder.shared import context
from coder.shared.errors import Conflict, Forbidden, InvalidField, NotFound
from coder.shared.repository import owned_by, scoped


@dataclass(frozen=True)
class Actor:
    """Who acts: a user of this gateway, in the org their token names, with the token's permissions."""

    user_id: uuid.UUID
    org_id: uuid.UUID | None
    permissions: frozenset[str]
    ip: str | None = None

    def can(self, permission: str) -> bool:
        return any(roles.covers(p, permission) for p in self.permissions)

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise Forbidden(f"requires permission {permission}", required=permission)

    def in_org(self, org_id: uuid.UUID) -> uuid.UUID:
        """The org id if it is the actor's, else 404: another org's resources do not exist for them."""
        if self.org_id is None or org_id != self.org_id:
            raise NotFound("no such organization")
        return org_id

    @property
    def org(self) -> uuid.UUID:
        if self.org_id is None:
            raise NotFound("this token acts in no organization")
        return self.org_id


def _now() -> datetime:
    return datetime.now(UTC)


def declared_permissions() -> dict[str, frozenset[str]]:
    """Target -> the actions it declares, over every target in the registry."""
    return roles.declared(registry.descriptors().values())


async def audit(
    session: AsyncSession,
    actor: Actor,
    org_id: uuid.UUID,
    action: str,
    resource_type: str,
    resource_id: Any,
    **details: Any,
) -> None:
    session.add(
        AuditEntry(
            org_id=org_id,
            actor_id=actor.user_id,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            details=details,
            request_id=context.request_id.get(),
            ip=actor.ip,
        )
    )


# Roles


async def permissions_of(session: AsyncSession, org_id: uuid.UUID, role: str) -> list[str]:
    """The permissions a member with `role` gets in `org_id`, resolved now (tokens carry the result)."""
    if role in roles.BUILTIN_ROLES:
        return roles.builtin_permissions(role, registry.descriptors().values())
    row = await session.scalar(scoped(Role, org_id).where(Role.name == role))
    return list(row.permissions) if row is not None else []


def _check_permissions(field: str, permissions: Sequence[str], *, custom_role: bool) -> list[str]:
    known = declared_permissions()
    for index, permission in enumerate(permissions):
        reason = roles.invalid_permission(permission, known)
        if reason is None and custom_role and roles.grants_ownership([permission]):
            reason = "a custom role cannot include ownership (`*` or `gateway:*`)"
        if reason:
            raise InvalidField(f"{field}.{index}", reason)
    return list(dict.fromkeys(permissions))


async def _role_exists(session: AsyncSession, org_id: uuid.UUID, role: str) -> bool:
    if role in roles.BUILTIN_ROLES:
        return True
    found = await session.scalar(select(Role.id).where(owned_by(Role, org_id), Role.name == role))
    return found is not None


async def list_roles(session: AsyncSession, org_id: uuid.UUID) -> list[RoleRead]:
    builtin = [
        RoleRead(
            name=name,
            description=f"Built-in {name} role",
            permissions=roles.builtin_permissions(name, registry.descriptors().values()),
            builtin=True,
        )
        for name in roles.BUILTIN_ROLES
    ]
    custom = (await session.scalars(scoped(Role, org_id).order_by(Role.name))).all()
    return builtin + [
        RoleRead(name=r.name, description=r.description, permissions=r.permissions, builtin=False)
        for r in custom
    ]


async def create_role(session: AsyncSession, actor: Actor, body: RoleCreate) -> RoleRead:
    org_id = actor.org
    if body.name in roles.BUILTIN_ROLES or await _role_exists(session, org_id, body.name):
        raise Conflict(f"a role named {body.name!r} exists", errors=[{"field": "name", "message": "taken"}])
    permissions = _check_permissions("permissions", body.permissions, custom_role=True)
    session.add(Role(org_id=org_id, name=body.name, description=body.description, permissions=permissions))
    await audit(session, actor, org_id, "role.created", "role", body.name, permissions=permissions)
    await session.flush()
    return RoleRead(name=body.name, description=body.description, permissions=permissions, builtin=False)


async def _custom_role(session: AsyncSession, org_id: uuid.UUID, name: str, *, lock: bool = False) -> Role:
    if name in roles.BUILTIN_ROLES:
        raise Forbidden("built-in roles cannot be changed", slug="builtin-role")
    query = scoped(Role, org_id).where(Role.name == name)
    row = await session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(f"no role named {name!r}")
    return row


async def update_role(
    session: AsyncSession, actor: Actor, name: str, body: RoleUpdate
) -> tuple[RoleRead, list[uuid.UUID]]:
    """Returns the role and the members holding it (their tokens are now stale)."""
    row = await _custom_role(session, actor.org, name, lock=True)
    if body.permissions is not None:
        row.permissions = _check_permissions("permissions", body.permissions, custom_role=True)
    if body.description is not None:
        row.description = body.description
    await audit(session, actor, actor.org, "role.updated", "role", name, permissions=row.permissions)
    await session.flush()
    holders = (
        await session.scalars(
            select(Membership.user_id).where(owned_by(Membership, actor.org), Membership.role == name)
        )
    ).all()
    return RoleRead(
        name=row.name, description=row.description, permissions=row.permissions, builtin=False
    ), list(holders)


async def delete_role(session: AsyncSession, actor: Actor, name: str) -> None:
    row = await _custom_role(session, actor.org, name, lock=True)
    in_use = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(owned_by(Membership, actor.org), Membership.role == name)
    )
    if in_use:
        raise Conflict(f"{in_use} member(s) still hold role {name!r}", slug="role-in-use")
    await session.delete(row)
    await audit(session, actor, actor.org, "role.deleted", "role", name)
    await session.flush()


# Organizations and members


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48]
    return slug if len(slug) >= 2 else "org"


async def create_org(
    session: AsyncSession, owner: uuid.UUID, name: str, slug: str | None = None, ip: str | None = None
) -> Org:
    """A new organization with `owner` as its owner."""
    if slug is not None:
        if await session.scalar(select(Org.id).where(Org.slug == slug)):
            raise Conflict(f"slug {slug!r} is taken", errors=[{"field": "slug", "message": "taken"}])
    else:
        slug = _slugify(name)
        if await session.scalar(select(Org.id).where(Org.slug == slug)):
            slug = f"{slug}-{secrets.token_hex(3)}"
    org = Org(id=uuid.uuid4(), name=name, slug=slug)
    session.add(org)
    await session.flush()
    session.add(Membership(org_id=org.id, user_id=owner, role=roles.OWNER))
    actor = Actor(owner, org.id, frozenset({"*"}), ip)
    await audit(session, actor, org.id, "org.created", "org", org.id, name=name, slug=slug)
    await session.flush()
    return org


async def memberships(session: AsyncSession, user_id: uuid.UUID) -> list[tuple[Org, Membership]]:
    rows = await session.execute(
        select(Org, Membership)
        .join(Membership, Membership.org_id == Org.id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.created_at, Org.id)
    )
    return [(org, membership) for org, membership in rows.all()]


async def membership(session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return await session.get(Membership, (org_id, user_id))


async def get_org(session: AsyncSession, actor: Actor, org_id: uuid.UUID) -> Org:
    org = await session.get(Org, actor.in_org(org_id))
    if org is None:
        raise NotFound("no such organization")
    return org


async def update_org(session: AsyncSession, actor: Actor, org_id: uuid.UUID, name: str) -> Org:
    org = await get_org(session, actor, org_id)
    previous, org.name = org.name, name
    await audit(session, actor, org.id, "org.updated", "org", org.id, name=name, previous=previous)
    await session.flush()
    return org


def members_query(org_id: uuid.UUID) -> Any:
    return (
        select(Membership, User).join(User, User.id == Membership.user_id).where(owned_by(Membership, org_id))
    )


def member_read(membership: Membership, user: User) -> MemberRead:
    return MemberRead(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=membership.role,
        joined_at=membership.created_at,
    )


async def _member(
    session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
) -> Membership:
    query = scoped(Membership, org_id).where(Membership.user_id == user_id)
    found = await session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound("no such member")
    return found


async def _owners(session: AsyncSession, org_id: uuid.UUID) -> int:
    # Lock the owners' rows: two admins demoting the last two owners at once must not both succeed.
    rows = await session.scalars(
        select(Membership.user_id)
        .where(owned_by(Membership, org_id), Membership.role == roles.OWNER)
        .with_for_update()
    )
    return len(rows.all())


async def change_role(
    session: AsyncSession, actor: Actor, org_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> MemberRead:
    actor.in_org(org_id)
    actor.require(roles.MEMBERS_WRITE)
    if not await _role_exists(session, org_id, role):
        raise InvalidField("role", f"no role named {role!r} in this organization")
    member = await _member(session, org_id, user_id, lock=True)
    if roles.OWNER in (role, member.role):
        actor.require(roles.OWNERS_WRITE)
        if member.role == roles.OWNER and role != roles.OWNER and await _owners(session, org_id) <= 1:
            raise Conflict("an organization keeps at least one owner", slug="last-owner")
    previous, member.role = member.role, role
    await audit(session, actor, org_id, "member.role_changed", "user", user_id, role=role, previous=previous)
    await session.flush()
    user = await session.get(User, user_id)
    assert user is not None
    return member_read(member, user)


async def remove_member(session: AsyncSession, actor: Actor, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
    actor.in_org(org_id)
    actor.require(roles.ACCOUNT_WRITE if user_id == actor.user_id else roles.MEMBERS_WRITE)
    member = await _member(session, org_id, user_id, lock=True)
    if member.role == roles.OWNER:
        if user_id != actor.user_id:
            actor.require(roles.OWNERS_WRITE)
        if await _owners(session, org_id) <= 1:
            raise Conflict("an organization keeps at least one owner", slug="last-owner")
    await session.delete(member)
    teams = select(Team.id).where(owned_by(Team, org_id)).scalar_subquery()
    await session.execute(
        delete(TeamMember).where(TeamMember.user_id == user_id, TeamMember.team_id.in_(teams))
    )
    revoked = await session.scalars(
        select(PersonalToken).where(
            PersonalToken.user_id == user_id,
            owned_by(PersonalToken, org_id),
            PersonalToken.revoked_at.is_(None),
        )
    )
    for token in revoked:
        token.revoked_at = _now()
    action = "member.left" if user_id == actor.user_id else "member.removed"
    await audit(session, actor, org_id, action, "user", user_id, role=member.role)
    await session.flush()


# Invitations


async def invite(
    session: AsyncSession, actor: Actor, org_id: uuid.UUID, body: InvitationCreate, ttl_seconds: int
) -> tuple[Invitation, str]:
    actor.in_org(org_id)
    actor.require(roles.INVITATIONS_WRITE)
    if not await _role_exists(session, org_id, body.role):
        raise InvalidField("role", f"no role named {body.role!r} in this organization")
    if body.role == roles.OWNER:
        actor.require(roles.OWNERS_WRITE)
    already = await session.scalar(
        select(Membership.user_id)
        .join(User, User.id == Membership.user_id)
        .where(owned_by(Membership, org_id), User.email == body.email)
    )
    if already is not None:
        raise Conflict(
            f"{body.email} is already a member", errors=[{"field": "email", "message": "a member"}]
        )
    token = new_secret(INVITATION_PREFIX)
    invitation = Invitation(
        org_id=org_id,
        email=body.email,
        role=body.role,
        token_hash=digest(token),
        invited_by=actor.user_id,
        expires_at=_now() + timedelta(seconds=ttl_seconds),
    )
    session.add(invitation)
    await session.flush()
    await audit(
        session,
        actor,
        org_id,
        "invitation.created",
        "invitation",
        invitation.id,
        email=body.email,
        role=body.role,
    )
    await session.flush()
    return invitation, token


async def revoke_invitation(
    session: AsyncSession, actor: Actor, org_id: uuid.UUID, invitation_id: uuid.UUID
) -> None:
    actor.in_org(org_id)
    actor.require(roles.INVITATIONS_WRITE)
    invitation = await session.scalar(
        select(Invitation)
        .where(Invitation.id == invitation_id, owned_by(Invitation, org_id))
        .with_for_update()
    )
    if invitation is None:
        raise NotFound("no such invitation")
    if invitation.accepted_at is not None:
        raise Conflict("the invitation was already accepted", slug="invitation-used")
    if invitation.revoked_at is None:
        invitation.revoked_at = _now()
        await audit(
            session, actor, org_id, "invitation.revoked", "invitation", invitation.id, email=invitation.email
        )
    await session.flush()


async def accept_invitation(session: AsyncSession, user: User, token: str, field: str) -> Membership:
    """Join the invitation's org with its role; the invitation must be addressed to this user."""
    invitation = await session.scalar(
        select(Invitation).where(Invitation.token_hash == digest(token)).with_for_update()
    )
    if invitation is None or invitation.revoked_at is not None or invitation.expires_at <= _now():
        raise InvalidField(field, "not a valid invitation (unknown, revoked or expired)", status=404)
    if invitation.accepted_at is not None:
        raise Conflict("the invitation was already accepted", slug="invitation-used")
    if invitation.email != user.email:
        raise Forbidden("the invitation is addressed to another email address", slug="invitation-mismatch")
    if await membership(session, invitation.org_id, user.id) is not None:
        raise Conflict("already a member of this organization")
    return await join(session, user, invitation)


async def pending_invitation(session: AsyncSession, email: str) -> Invitation | None:
    """The newest open invitation to `email` (for addresses an identity provider has verified)."""
    return await session.scalar(
        select(Invitation)
        .where(Invitation.email == email, Invitation.accepted_at.is_(None), Invitation.revoked_at.is_(None))
        .where(Invitation.expires_at > _now())
        .order_by(Invitation.created_at.desc())
        .limit(1)
        .with_for_update()
    )


async def join(session: AsyncSession, user: User, invitation: Invitation) -> Membership:
    invitation.accepted_at, invitation.accepted_by = _now(), user.id
    joined = Membership(org_id=invitation.org_id, user_id=user.id, role=invitation.role)
    session.add(joined)
    actor = Actor(user.id, invitation.org_id, frozenset())
    await audit(
        session,
        actor,
        invitation.org_id,
        "invitation.accepted",
        "invitation",
        invitation.id,
        role=invitation.role,
    )
    await session.flush()
    return joined


# Teams


async def _team(session: AsyncSession, actor: Actor, team_id: uuid.UUID, *, lock: bool = False) -> Team:
    """The team if it is in the actor's org, else 404, looked up before any permission is checked:
    another org's team does not exist for anyone (a 403 is for the org's own teams only)."""
    query = select(Team).where(Team.id == team_id, owned_by(Team, actor.org))
    team = await session.scalar(query.with_for_update() if lock else query)
    if team is None:
        raise NotFound("no such team")
    return team


async def get_team(session: AsyncSession, actor: Actor, team_id: uuid.UUID) -> Team:
    team = await _team(session, actor, team_id)
    # Teams name their members: reading them is reading the member list.
    actor.require(roles.MEMBERS_READ)
    return team


async def _unique_team_name(
    session: AsyncSession, org_id: uuid.UUID, name: str, other_than: uuid.UUID | None
) -> None:
    found = await session.scalar(select(Team.id).where(owned_by(Team, org_id), Team.name == name))
    if found is not None and found != other_than:
        raise Conflict(f"a team named {name!r} exists", errors=[{"field": "name", "message": "taken"}])


async def create_team(session: AsyncSession, actor: Actor, body: TeamCreate) -> Team:
    actor.require(roles.TEAMS_WRITE)
    await _unique_team_name(session, actor.org, body.name, None)
    team = Team(id=uuid.uuid4(), org_id=actor.org, name=body.name, description=body.description)
    session.add(team)
    await session.flush()
    await audit(session, actor, actor.org, "team.created", "team", team.id, name=body.name)
    await session.flush()
    return team


async def update_team(session: AsyncSession, actor: Actor, team_id: uuid.UUID, body: TeamUpdate) -> Team:
    team = await _team(session, actor, team_id, lock=True)
    actor.require(roles.TEAMS_WRITE)
    changes = body.model_dump(exclude_none=True)
    if "name" in changes:
        await _unique_team_name(session, actor.org, changes["name"], team.id)
    for name, value in changes.items():
        setattr(team, name, value)
    await audit(session, actor, actor.org, "team.updated", "team", team.id, fields=sorted(changes))
    await session.flush()
    return team


async def delete_team(session: AsyncSession, actor: Actor, team_id: uuid.UUID) -> None:
    team = await _team(session, actor, team_id, lock=True)
    actor.require(roles.TEAMS_WRITE)
    await session.delete(team)
    await audit(session, actor, actor.org, "team.deleted", "team", team.id, name=team.name)
    await session.flush()


def team_members_query(team_id: uuid.UUID) -> Any:
    return (
        select(TeamMember, User)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.team_id == team_id)
    )


def team_member_read(row: TeamMember, user: User) -> TeamMemberRead:
    return TeamMemberRead(user_id=user.id, email=user.email, name=user.name, added_at=row.added_at)


async def add_team_member(
    session: AsyncSession, actor: Actor, team_id: uuid.UUID, user_id: uuid.UUID
) -> TeamMemberRead:
    team = await _team(session, actor, team_id)
    actor.require(roles.TEAMS_WRITE)
    if await membership(session, actor.org, user_id) is None:
        raise NotFound("no such member in this organization")
    row = await session.get(TeamMember, (team.id, user_id))
    if row is None:
        row = TeamMember(team_id=team.id, user_id=user_id, added_at=_now())
        session.add(row)
        await audit(session, actor, actor.org, "team.member_added", "team", team.id, user_id=str(user_id))
        await session.flush()
    user = await session.get(User, user_id)
    assert user is not None
    return team_member_read(row, user)


async def remove_team_member(
    session: AsyncSession, actor: Actor, team_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    team = await _team(session, actor, team_id)
    actor.require(roles.TEAMS_WRITE)
    row = await session.get(TeamMember, (team.id, user_id))
    if row is None:
        raise NotFound("not a member of this team")
    await session.delete(row)
    await audit(session, actor, actor.org, "team.member_removed", "team", team.id, user_id=str(user_id))
    await session.flush()


# Audit


def audit_query(
    org_id: uuid.UUID,
    *,
    actor_id: uuid.UUID | None,
    action: str | None,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Any:
    query = scoped(AuditEntry, org_id)
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if action is not None:
        # `member.` selects every member action; a full name selects one.
        query = query.where(
            AuditEntry.action.startswith(action) if action.endswith(".") else AuditEntry.action == action
        )
    if resource_type is not None:
        query = query.where(AuditEntry.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(AuditEntry.resource_id == resource_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    return query
