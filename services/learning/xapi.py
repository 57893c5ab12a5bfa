"""The xAPI statement store: statements stored whole, found by actor, verb, activity and time.

A statement sent again under its id is accepted when it is the same statement (xAPI's comparison
leaves out `id`, `stored`, `authority`, `timestamp` and `version`) and refused with 409 otherwise. The
course actions write their statements here too, with the learner as an `account` agent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.learning.models import Statement
from coder.services.learning.schemas import Agent, StatementCreate
from coder.shared.errors import Conflict
from coder.shared.repository import OrgScoped

VERSION = "1.0.3"
# The homePage of the accounts the platform's users are known by in statements.
ACCOUNT_HOME = "https://coderide.io"
ACTIVITIES = "https://coderide.io/xapi/activities/learning"
ADL = "http://adlnet.gov/expapi/verbs/"
VERBS = {
    "registered": ADL + "registered",
    "completed": ADL + "completed",
    "attempted": ADL + "attempted",
    "passed": ADL + "passed",
    "failed": ADL + "failed",
}
# Not part of what makes two statements under one id the same (xAPI 1.0.3, "Statement Comparision").
IGNORED = ("id", "stored", "authority", "timestamp", "version")


class StatementConflict(Conflict):
    slug, title = "statement-conflict", "Another statement has this id"

    def __init__(self, statement_id: uuid.UUID) -> None:
        super().__init__(f"statement {statement_id} is stored with different content", id=str(statement_id))


def user_agent(user_id: str) -> Agent:
    return Agent.model_validate({"account": {"homePage": ACCOUNT_HOME, "name": user_id}})


def activity_id(*parts: object) -> str:
    return "/".join([ACTIVITIES, *map(str, parts)])


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in IGNORED}


async def store(session: AsyncSession, org_id: str, authority: str, statement: StatementCreate) -> uuid.UUID:
    """Store one statement (its id given or new); the id. A stored id: the same content is accepted
    again and nothing changes, different content is a StatementConflict."""
    statement_id = statement.id or uuid.uuid4()
    now = datetime.now(UTC)
    body = statement.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["id"] = str(statement_id)
    body.setdefault("timestamp", now.isoformat())
    existing = await OrgScoped(Statement, session, org_id, "statement").find(
        Statement.id == statement_id, lock=True
    )
    if existing is not None:
        if _comparable(existing.body) != _comparable(body):
            raise StatementConflict(statement_id)
        return statement_id
    body.update(
        {
            "stored": now.isoformat(),
            "version": VERSION,
            "authority": user_agent(authority).model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    )
    session.add(
        Statement(
            org_id=org_id,
            id=statement_id,
            actor_key=statement.actor.key(),
            verb_id=statement.verb.id,
            activity_id=statement.object.id,
            timestamp=statement.timestamp or now,
            stored=now,
            authority=authority,
            body=body,
        )
    )
    await session.flush()
    return statement_id


async def record(
    session: AsyncSession,
    org_id: str,
    user_id: str,
    verb: str,
    object_id: str,
    name: str,
    *,
    result: dict[str, Any] | None = None,
    parent: str | None = None,
    registration: uuid.UUID | None = None,
) -> uuid.UUID:
    """The statement of a course action: the user, an ADL verb, the course's activity."""
    context: dict[str, Any] = {"platform": "Coder Platform"}
    if registration is not None:
        context["registration"] = str(registration)
    if parent is not None:
        context["contextActivities"] = {"parent": [{"id": parent}]}
    statement = StatementCreate.model_validate(
        {
            "actor": {"account": {"homePage": ACCOUNT_HOME, "name": user_id}},
            "verb": {"id": VERBS[verb], "display": {"en-US": verb}},
            "object": {"id": object_id, "definition": {"name": {"en-US": name}}},
            "result": result,
            "context": context,
        }
    )
    return await store(session, org_id, user_id, statement)
