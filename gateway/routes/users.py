"""The signed-in user: profile, memberships, password."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.gateway import roles, service
from coder.gateway import sessions as accounts
from coder.gateway.deps import ActorDep, CallerDep, GatewayDep
from coder.gateway.models import Team, TeamMember, User
from coder.gateway.schemas import MembershipSummary, MeRead, PasswordChange, UserRead, UserUpdate
from coder.shared.db import SessionDep
from coder.shared.errors import Unauthorized
from coder.shared.repository import owned_by

router = APIRouter(prefix="/api/users", tags=["users"])


async def _user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None or user.disabled:
        raise Unauthorized("the account no longer exists", slug="unknown-user")
    return user


@router.get("/me", response_model=MeRead)
async def read_me(session: SessionDep, actor: ActorDep) -> MeRead:
    """Who the token belongs to, the organization it acts in, its permissions and every membership.
    Open to every valid credential, however narrow: it shows only the holder's own identity, and
    lets a client see what its token may do."""
    user = await _user(session, actor.user_id)
    memberships = [
        MembershipSummary(org_id=org.id, org_name=org.name, org_slug=org.slug, role=m.role)
        for org, m in await service.memberships(session, user.id)
    ]
    teams: list[uuid.UUID] = []
    if actor.org_id is not None:
        teams = list(
            (
                await session.execute(
                    select(Team.id)
                    .join(TeamMember, TeamMember.team_id == Team.id)
                    .where(owned_by(Team, actor.org_id), TeamMember.user_id == user.id)
                    .order_by(Team.id)
                )
            ).scalars()
        )
    return MeRead(
        **UserRead.model_validate(user).model_dump(),
        org_id=actor.org_id,
        permissions=sorted(actor.permissions),
        memberships=memberships,
        teams=teams,
    )


@router.patch("/me", response_model=UserRead)
async def update_me(body: UserUpdate, session: SessionDep, actor: ActorDep) -> UserRead:
    """Change your display name. Needs `gateway:account.write`."""
    actor.require(roles.ACCOUNT_WRITE)
    user = await _user(session, actor.user_id)
    user.name = body.name
    await session.flush()
    return UserRead.model_validate(user)


@router.put("/me/password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    body: PasswordChange, session: SessionDep, gateway: GatewayDep, actor: ActorDep, caller: CallerDep
) -> Response:
    """Set a new password (the current one is required if there is one). Every other session ends.
    Needs `gateway:account.write`."""
    actor.require(roles.ACCOUNT_WRITE)
    user = await _user(session, actor.user_id)
    await accounts.change_password(session, user, body.current_password, body.new_password, gateway.settings)
    current = (caller.principal.claims or {}).get("sid")
    keep = uuid.UUID(current) if isinstance(current, str) and not current.startswith("pat:") else None
    sids = await accounts.end_sessions(session, user.id, only=None, reason="password-changed", keep=keep)
    await gateway.revocations.revoke(sids)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
