"""Small builders for learning tests: a manager and learners, a published course of one module with
lessons and a quiz."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

API = "/api/learning/v1"
LEARNER = ("learning:read", "learning:learn")
QUESTIONS = [
    {"text": "2 + 2?", "kind": "single", "options": ["3", "4", "5"], "correct": [1], "points": 2},
    {"text": "Primes?", "kind": "multiple", "options": ["2", "4", "5", "9"], "correct": [0, 2], "points": 2},
]


@dataclass
class People:
    manager: dict[str, str]
    learner: dict[str, str]
    learner_id: str


def people(signer: TestSigner, org: str) -> People:
    learner_id = f"user-{uuid.uuid4().hex[:8]}"
    return People(
        manager=signer.headers(org, ("learning:*",)),
        learner=signer.headers(org, LEARNER, sub=learner_id),
        learner_id=learner_id,
    )


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@dataclass
class Course:
    id: str
    module_id: str
    lessons: list[str]
    quiz_id: str


async def build_course(
    p: Platform, h: dict[str, str], *, lessons: int = 2, publish: bool = True, title: str = "Python"
) -> Course:
    course = ok(await p.client.post(f"{API}/courses", json={"title": title}, headers=h), 201)
    url = f"{API}/courses/{course['id']}"
    module = ok(await p.client.post(f"{url}/modules", json={"title": "Basics"}, headers=h), 201)
    lesson_ids = [
        ok(
            await p.client.post(
                f"{url}/modules/{module['id']}/lessons", json={"title": f"L{n}", "content": "..."}, headers=h
            ),
            201,
        )["id"]
        for n in range(lessons)
    ]
    quiz = ok(
        await p.client.post(
            f"{url}/modules/{module['id']}/quizzes",
            json={"title": "Check", "pass_mark": 75, "questions": QUESTIONS},
            headers=h,
        ),
        201,
    )
    if publish:
        ok(await p.client.patch(url, json={"status": "published"}, headers=h))
    return Course(id=course["id"], module_id=module["id"], lessons=lesson_ids, quiz_id=quiz["id"])


async def finish(p: Platform, h: dict[str, str], course: Course) -> dict[str, Any]:
    """Enroll, complete every lesson, pass the quiz; the last progress."""
    url = f"{API}/courses/{course.id}"
    await p.client.post(f"{url}/enrollments", headers=h)
    for lesson in course.lessons:
        ok(await p.client.post(f"{url}/lessons/{lesson}/complete", headers=h))
    ok(
        await p.client.post(
            f"{url}/quizzes/{course.quiz_id}/attempts", json={"answers": [[1], [0, 2]]}, headers=h
        ),
        201,
    )
    progress: dict[str, Any] = ok(await p.client.get(f"{url}/progress", headers=h))
    return progress
