"""Plans and subtasks written by a model: one structured-output call to `ai`'s OpenAI-compatible
`/v1/chat/completions` (response_format json_schema, strict), then the answer is checked whole.

The answer is untrusted input from another system: bad JSON, a shape the schema refuses, a cycle or
a dependency on a task it did not give is the model's failure, answered 502 (`bad-model-answer`,
naming what was wrong) before anything is stored. `ai` unreachable is 503; `ai` refusing the call
(no permission, the user's budget, an unknown model) keeps its kind (`refusal`), ai failing is 502.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.planning.models import Plan, Task
from coder.services.planning.schemas import Check, Priority, TaskCreate
from coder.services.planning.service import BadBatch, NewTask, add_tasks
from coder.shared.errors import Problem, Unavailable
from coder.shared.http import ServiceClients

COMPLETIONS = "/v1/chat/completions"


class BadModelAnswer(Problem):
    status, slug, title = 502, "bad-model-answer", "The model's answer was unusable"


class AiFailed(Problem):
    status, slug, title = 502, "ai-failed", "The ai service failed the call"


class AiRefused(Problem):
    """ai refused the call for a reason of the caller's: the same kind of status, ai's detail."""

    slug, title = "ai-refused", "The ai service refused the call"


def refusal(response: httpx.Response) -> Problem:
    """ai's error answer as planning's: the user's own refusals stay theirs (403 no permission for
    ai, 429 budget or rate limit, 422 naming `model` for a request ai could not serve), anything
    else is ai failing (502). `upstream_status` keeps ai's own status."""
    detail = f"ai answered {response.status_code}: {_detail(response)}"
    upstream = response.status_code
    if upstream in (401, 403):
        return AiRefused(detail, status=403, upstream_status=upstream)
    if upstream in (402, 429):
        retry = response.headers.get("retry-after")
        headers = {"Retry-After": retry} if retry and retry.isdigit() else None
        return AiRefused(detail, status=429, headers=headers, upstream_status=upstream)
    if 400 <= upstream < 500:
        return AiRefused(
            detail, status=422, errors=[{"field": "model", "message": detail}], upstream_status=upstream
        )
    return AiFailed(detail, upstream_status=upstream)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DraftTask(_Answer):
    """A task as the model writes it: ids are its own numbering, 1..n in the answer."""

    id: int = Field(ge=1, le=1000)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(max_length=20_000)
    details: str = Field(max_length=20_000)
    test_strategy: str = Field(max_length=20_000)
    priority: Priority
    dependencies: list[Annotated[int, Field(ge=1, le=1000)]] = Field(max_length=100)
    acceptance_checks: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(max_length=50)
    complexity: int = Field(ge=1, le=10)


class DraftPlan(_Answer):
    title: str = Field(min_length=1, max_length=200)
    tasks: list[DraftTask] = Field(min_length=1, max_length=50)


class DraftSubtasks(_Answer):
    subtasks: list[DraftTask] = Field(min_length=1, max_length=20)


A = TypeVar("A", bound=_Answer)


def _strict(schema: Any) -> Any:
    """OpenAI's strict mode: every property required, no others, and none of the keywords it refuses
    (titles, defaults, bounds: the answer is validated against the full model afterwards)."""
    unsupported = {"title", "maxLength", "minLength", "maximum", "minimum", "maxItems", "minItems", "default"}
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    # A property may be *named* like a keyword ("title"): only keyword values (text, numbers) go.
    out = {k: _strict(v) for k, v in schema.items() if k not in unsupported or isinstance(v, dict)}
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


def response_format(name: str, answer: type[_Answer]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "strict": True, "schema": _strict(answer.model_json_schema())},
    }


async def ask(
    clients: ServiceClients,
    model: str,
    system: str,
    user: str,
    answer: type[A],
    name: str,
) -> A:
    """The model's answer to one structured-output request, parsed and validated, or a Problem."""
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "response_format": response_format(name, answer),
        "temperature": 0.2,
    }
    try:
        # The user's own token goes along: ai checks its permission and spends the user's budget.
        client = clients.client("ai")
        response = await client.post(COMPLETIONS, json=body)
    except KeyError:
        raise Unavailable("the ai service is not configured in this process") from None
    except httpx.HTTPError as error:
        raise Unavailable(f"the ai service is unreachable ({type(error).__name__})") from None
    if response.status_code != 200:
        raise refusal(response)
    try:
        completion = response.json()
        message = completion["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BadModelAnswer("ai's answer is not a chat completion") from None
    if message.get("refusal"):
        raise BadModelAnswer(f"the model refused: {str(message['refusal'])[:200]}")
    content = message.get("content")
    if not isinstance(content, str):
        raise BadModelAnswer("the model's answer has no content")
    try:
        return answer.model_validate_json(content)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            raise BadModelAnswer("the model's answer is not JSON") from None
        where = ".".join(map(str, first["loc"])) or "answer"
        raise BadModelAnswer(f"the model's answer breaks the schema at {where}: {first['msg']}") from None


def _detail(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(problem, dict):
        for key in ("detail", "error", "title"):
            value = problem.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                return value[:200]
    return json.dumps(problem)[:200]


PLAN_SYSTEM = """You are a software project planner. Break the user's goal into at most {max_tasks} \
concrete implementation tasks, in a sensible order. Number them 1..n in `id`; `dependencies` lists \
the ids of tasks that must be done first (only ids you gave, never forming a cycle). Give each task \
a priority (high, medium, low), implementation details, a test strategy, acceptance checks and a \
complexity from 1 to 10."""

EXPAND_SYSTEM = """You are a software project planner. Break the given task into {count} subtasks, \
in order. Number them 1..n in `id`; `dependencies` lists the ids of sibling subtasks that must be \
done first (only ids you gave, never forming a cycle). Give each a priority (high, medium, low), \
implementation details, a test strategy, acceptance checks and a complexity from 1 to 10."""


def plan_prompt(prompt: str, max_tasks: int) -> tuple[str, str]:
    return PLAN_SYSTEM.format(max_tasks=max_tasks), prompt


def expand_prompt(title: str, description: str, details: str, count: int, guidance: str) -> tuple[str, str]:
    parts = [f"Task: {title}"]
    if description:
        parts.append(f"Description: {description}")
    if details:
        parts.append(f"Details: {details}")
    if guidance:
        parts.append(f"Guidance: {guidance}")
    return EXPAND_SYSTEM.format(count=count), "\n\n".join(parts)


def batch(drafts: list[DraftTask], parent_id: int | None = None) -> list[NewTask]:
    """The model's tasks as a batch to add: its ids become references to the new tasks."""
    seen: set[int] = set()
    for index, draft in enumerate(drafts):
        if draft.id in seen:
            raise BadModelAnswer(f"the model's answer gives id {draft.id} twice (task {index})")
        seen.add(draft.id)
    return [
        NewTask(
            TaskCreate(
                title=d.title,
                description=d.description,
                details=d.details,
                test_strategy=d.test_strategy,
                priority=d.priority,
                parent_id=parent_id,
                acceptance_checks=[Check(text=text) for text in d.acceptance_checks],
                complexity=d.complexity,
            ),
            key=d.id,
            refs=list(d.dependencies),
        )
        for d in drafts
    ]


async def add_drafts(
    session: AsyncSession,
    org_id: str,
    plan: Plan,
    actor: str,
    drafts: list[DraftTask],
    *,
    field: str,
    parent_id: int | None = None,
) -> list[Task]:
    """The model's tasks added to the locked `plan` in one go; a plan rule they break (an unknown
    dependency, a cycle) is the model's failure, and nothing is added."""
    try:
        return await add_tasks(
            session, org_id, plan, actor, batch(drafts, parent_id), field_prefix=f"{field}."
        )
    except BadBatch as bad:
        raise BadModelAnswer(f"the model's answer is inconsistent at {bad.field}: {bad.message}") from None
