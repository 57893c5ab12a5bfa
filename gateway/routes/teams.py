"""Teams: groups of members inside the organization the token acts in."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from coder.gateway import roles, service
from coder.gateway.deps import ActorDep
from coder.gateway.models import Team, TeamMember
from coder.gateway.schemas import TeamCreate, TeamMemberRead, TeamRead, TeamUpdate
from coder.shared.db import SessionDep
from coder.shared.errors import problem_responses
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/api/teams", tags=["teams"])


@router.get("", response_model=Page[TeamRead])
async def list_teams(session: SessionDep, actor: ActorDep, params: PageDep) -> Page[TeamRead]:
    """The organization's teams by name (like every team read, needs `gateway:members.read`)."""
    actor.require(roles.MEMBERS_READ)
    rows = await paginate(session, scoped(Team, actor.org), (Team.name, Team.id), params)
    return rows.page(TeamRead.model_validate)


@router.post(
    "", response_model=TeamRead, status_code=status.HTTP_201_CREATED, responses=problem_responses({409})
)
async def create_team(body: TeamCreate, session: SessionDep, actor: ActorDep) -> TeamRead:
    """Create a team (admins)."""
    return TeamRead.model_validate(await service.create_team(session, actor, body))


@router.get("/{team_id}", response_model=TeamRead)
async def read_team(team_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> TeamRead:
    """One team of the organization."""
    return TeamRead.model_validate(await service.get_team(session, actor, team_id))


@router.patch("/{team_id}", response_model=TeamRead, responses=problem_responses({409}))
async def update_team(team_id: uuid.UUID, body: TeamUpdate, session: SessionDep, actor: ActorDep) -> TeamRead:
    """Rename a team or change its description (admins)."""
    return TeamRead.model_validate(await service.update_team(session, actor, team_id, body))


@router.delete("/{team_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_team(team_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> Response:
    """Delete a team; its members stay in the organization."""
    await service.delete_team(session, actor, team_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{team_id}/members", response_model=Page[TeamMemberRead])
async def list_team_members(
    team_id: uuid.UUID, session: SessionDep, actor: ActorDep, params: PageDep
) -> Page[TeamMemberRead]:
    """The team's members, in the order they were added."""
    team = await service.get_team(session, actor, team_id)
    query = service.team_members_query(team.id)
    rows = await paginate(session, query, (TeamMember.added_at, TeamMember.user_id), params)
    return rows.page(lambda r: service.team_member_read(*r))


@router.put("/{team_id}/members/{user_id}", response_model=TeamMemberRead)
async def add_team_member(
    team_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> TeamMemberRead:
    """Add a member of the organization to the team (admins); adding twice changes nothing."""
    return await service.add_team_member(session, actor, team_id, user_id)


@router.delete("/{team_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_team_member(
    team_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> Response:
    """Take a member off the team (admins)."""
    await service.remove_team_member(session, actor, team_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
