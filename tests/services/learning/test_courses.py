"""learning through the gateway path `/api/learning`: courses and their outline, quizzes scored on
the server with their answers kept from learners, enrollments, progress, completion and paths, with
their events and statements, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from coder.services.learning.service import mark
from coder.tests.services.learning.factories import API, LEARNER, QUESTIONS, build_course, finish, ok, people
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner

COMPLETED = "http://adlnet.gov/expapi/verbs/completed"


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("chosen", "points"),
    [([0, 2], 2.0), ([0], 1.0), ([0, 1], 0.0), ([0, 1, 2], 1.0), ([], 0.0), ([1, 3], 0.0)],
)
def test_multiple_choice_earns_partial_credit_never_below_zero(chosen: list[int], points: float) -> None:
    assert mark(QUESTIONS[1], chosen) == points


def test_single_choice_is_all_or_nothing() -> None:
    assert (mark(QUESTIONS[0], [1]), mark(QUESTIONS[0], [0]), mark(QUESTIONS[0], [])) == (2.0, 0.0, 0.0)


async def test_a_draft_is_hidden_from_learners_until_published(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    who = people(signer, org)
    course = await build_course(platform, who.manager, publish=False)
    url = f"{API}/courses/{course.id}"
    assert (await platform.client.get(url, headers=who.learner)).status_code == 404
    listed = ok(await platform.client.get(f"{API}/courses", headers=who.learner))
    assert course.id not in [c["id"] for c in listed["items"]]
    draft = problem(await platform.client.post(f"{url}/enrollments", headers=who.learner), 404)
    assert draft["detail"] == f"no course {course.id}"
    assert (
        ok(await platform.client.get(f"{API}/courses", params={"status": "draft"}, headers=who.manager))[
            "items"
        ][0]["id"]
        == course.id
    )

    empty = ok(
        await platform.client.post(f"{API}/courses", json={"title": "Empty"}, headers=who.manager), 201
    )
    refused = problem(
        await platform.client.patch(
            f"{API}/courses/{empty['id']}", json={"status": "published"}, headers=who.manager
        ),
        409,
    )
    assert refused["type"].endswith("/empty-course")

    events = await listen(platform, "learning.course.published")
    ok(await platform.client.patch(url, json={"status": "published"}, headers=who.manager))
    outline = ok(await platform.client.get(url, headers=who.learner))
    module = outline["modules"][0]
    assert [lesson["id"] for lesson in module["lessons"]] == course.lessons
    assert [q["id"] for q in module["quizzes"]] == [course.quiz_id]
    await wait_until(lambda: any(e.data["course_id"] == course.id for e in events), what="published event")
    # A learner may not author.
    forbidden = problem(
        await platform.client.post(f"{url}/modules", json={"title": "x"}, headers=who.learner), 403
    )
    assert "learning:manage" in forbidden["detail"]


async def test_quiz_answers_stay_hidden_until_an_attempt_is_scored(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    who = people(signer, org)
    course = await build_course(platform, who.manager)
    url = f"{API}/courses/{course.id}"
    quiz_url = f"{url}/quizzes/{course.quiz_id}"
    as_learner = ok(await platform.client.get(quiz_url, headers=who.learner))
    assert all("correct" not in q for q in as_learner["questions"])
    assert "correct" not in str(as_learner)
    as_manager = ok(await platform.client.get(quiz_url, headers=who.manager))
    assert [q["correct"] for q in as_manager["questions"]] == [[1], [0, 2]]

    before = problem(
        await platform.client.post(f"{quiz_url}/attempts", json={"answers": [[1], [0]]}, headers=who.learner),
        409,
    )
    assert before["type"].endswith("/not-enrolled")
    first = await platform.client.post(f"{url}/enrollments", headers=who.learner)
    again = await platform.client.post(f"{url}/enrollments", headers=who.learner)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]

    bad = [
        ({"answers": [[1]]}, "answers"),
        ({"answers": [[1], [0, 7]]}, "answers.1"),
        ({"answers": [[0, 1], [0]]}, "answers.0"),
        ({"answers": [[1], [0, 0]]}, "answers.1"),
    ]
    for body, field in bad:
        refused = problem(
            await platform.client.post(f"{quiz_url}/attempts", json=body, headers=who.learner), 422
        )
        assert refused["errors"][0]["field"] == field, refused

    # 2 (right) + 1 (half the multiple choice) = 3 of 4: 75 % passes a pass mark of 75.
    events = await listen(platform, "learning.quiz.attempted")
    failed = ok(
        await platform.client.post(
            f"{quiz_url}/attempts", json={"answers": [[0], [0, 2]]}, headers=who.learner
        ),
        201,
    )
    assert (failed["score"], failed["max_score"], failed["passed"]) == (2.0, 4, False)
    assert [m["expected"] for m in failed["marks"]] == [[1], [0, 2]]
    assert [m["correct"] for m in failed["marks"]] == [False, True]
    passed = ok(
        await platform.client.post(f"{quiz_url}/attempts", json={"answers": [[1], [0]]}, headers=who.learner),
        201,
    )
    assert (passed["score"], passed["scaled"], passed["passed"]) == (3.0, 0.75, True)
    mine = ok(await platform.client.get(f"{quiz_url}/attempts", headers=who.learner))
    assert [a["id"] for a in mine["items"]] == [failed["id"], passed["id"]]
    other = ok(await platform.client.get(f"{quiz_url}/attempts", headers=people(signer, org).learner))
    assert other["items"] == []
    await wait_until(lambda: len(events) == 2, what="two attempt events")
    assert sorted(e.data["passed"] for e in events) == [False, True]


async def test_a_course_completes_once_every_required_item_is_done(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    who = people(signer, org)
    course = await build_course(platform, who.manager)
    url = f"{API}/courses/{course.id}"
    optional = ok(
        await platform.client.post(
            f"{url}/modules/{course.module_id}/lessons",
            json={"title": "Extra", "required": False},
            headers=who.manager,
        ),
        201,
    )
    events = await listen(platform, "learning.course.completed", "learning.lesson.completed")
    not_yet = problem(
        await platform.client.post(f"{url}/lessons/{course.lessons[0]}/complete", headers=who.learner), 409
    )
    assert not_yet["type"].endswith("/not-enrolled")
    await platform.client.post(f"{url}/enrollments", headers=who.learner)

    state = ok(await platform.client.post(f"{url}/lessons/{course.lessons[0]}/complete", headers=who.learner))
    assert (
        state["required_lessons_done"],
        state["lessons_required"],
        state["percent"],
        state["completed"],
    ) == (
        1,
        2,
        33,
        False,
    )
    ok(
        await platform.client.post(f"{url}/lessons/{course.lessons[0]}/complete", headers=who.learner)
    )  # again
    ok(await platform.client.post(f"{url}/lessons/{optional['id']}/complete", headers=who.learner))
    final = await finish(platform, who.learner, course)
    assert (final["percent"], final["completed"], final["quizzes_passed"]) == (100, True, [course.quiz_id])
    assert final["completed_at"] is not None
    # Passing again changes nothing: one completion, one event.
    ok(
        await platform.client.post(
            f"{url}/quizzes/{course.quiz_id}/attempts", json={"answers": [[1], [0, 2]]}, headers=who.learner
        ),
        201,
    )
    mine = ok(await platform.client.get(f"{API}/progress", headers=who.learner))
    assert [(p["course_id"], p["completed"]) for p in mine["items"]] == [(course.id, True)]

    await wait_until(
        lambda: [e for e in events if e.type == "learning.course.completed"], what="the completion event"
    )
    lessons = [e for e in events if e.type == "learning.lesson.completed"]
    assert len(lessons) == 3 and all(e.data["user_id"] == who.learner_id for e in lessons)
    assert [e.data["course_id"] for e in events if e.type == "learning.course.completed"] == [course.id]

    # The course's statements: registered, three lessons, two attempts (attempted + passed each), completed.
    activity = f"https://coderide.io/xapi/activities/learning/courses/{course.id}"
    done = ok(
        await platform.client.get(
            f"{API}/xapi/statements", params={"verb": COMPLETED, "activity": activity}, headers=who.learner
        )
    )
    assert len(done["statements"]) == 1
    statement = done["statements"][0]
    assert statement["actor"]["account"] == {"homePage": "https://coderide.io", "name": who.learner_id}
    assert statement["result"] == {"success": True, "completion": True}
    every = ok(await platform.client.get(f"{API}/xapi/statements", headers=who.learner))
    verbs = sorted(s["verb"]["display"]["en-US"] for s in every["statements"])
    assert verbs == [
        "attempted",
        "attempted",
        "completed",
        "completed",
        "completed",
        "completed",
        "passed",
        "passed",
        "registered",
    ]
    assert all(s["actor"]["account"]["name"] == who.learner_id for s in every["statements"])


async def test_a_path_completes_with_its_last_course(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    who = people(signer, org)
    first = await build_course(platform, who.manager, lessons=1, title="One")
    second = await build_course(platform, who.manager, lessons=1, title="Two")
    unknown = "00000000-0000-4000-8000-000000000000"
    for ids, field in (([first.id, unknown], "course_ids.1"), ([first.id, first.id], "course_ids.1")):
        refused = problem(
            await platform.client.post(
                f"{API}/paths", json={"title": "P", "course_ids": ids}, headers=who.manager
            ),
            422,
        )
        assert refused["errors"][0]["field"] == field
    path = ok(
        await platform.client.post(
            f"{API}/paths",
            json={"title": "Backend", "course_ids": [first.id, second.id]},
            headers=who.manager,
        ),
        201,
    )
    events = await listen(platform, "learning.path.completed")
    url = f"{API}/paths/{path['id']}/progress"
    start = ok(await platform.client.get(url, headers=who.learner))
    assert (start["next_course_id"], start["completed"]) == (first.id, False)
    await finish(platform, who.learner, second)  # out of order: still not the path
    middle = ok(await platform.client.get(url, headers=who.learner))
    assert (middle["next_course_id"], middle["completed"]) == (first.id, False)
    await finish(platform, who.learner, first)
    end = ok(await platform.client.get(url, headers=who.learner))
    assert (end["next_course_id"], end["completed"]) == (None, True) and end["completed_at"]
    assert [c["completed"] for c in end["courses"]] == [True, True]
    await wait_until(lambda: events, what="the path event")
    assert [(e.data["path_id"], e.data["user_id"]) for e in events] == [(path["id"], who.learner_id)]


async def test_a_viewer_reads_but_does_not_enroll(platform: Platform, signer: TestSigner, org: str) -> None:
    who = people(signer, org)
    course = await build_course(platform, who.manager)
    viewer = signer.headers(org, ("learning:read",))
    ok(await platform.client.get(f"{API}/courses/{course.id}", headers=viewer))
    refused = problem(
        await platform.client.post(f"{API}/courses/{course.id}/enrollments", headers=viewer), 403
    )
    assert "learning:learn" in refused["detail"]
    assert LEARNER == ("learning:read", "learning:learn")
