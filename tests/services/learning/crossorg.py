"""learning's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

QUESTION = {"text": "Q", "kind": "single", "options": ["a", "b"], "correct": [0]}


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    async def post(path: str, body: object, status: int = 201) -> dict[str, str]:
        response = await client.request("POST", path, json=body, headers=headers)
        assert response.status_code == status, response.text
        answer: dict[str, str] = response.json()
        return answer

    course = await post("/v1/courses", {"title": "Course"})
    url = f"/v1/courses/{course['id']}"
    module = await post(f"{url}/modules", {"title": "M"})
    lesson = await post(f"{url}/modules/{module['id']}/lessons", {"title": "L"})
    quiz = await post(f"{url}/modules/{module['id']}/quizzes", {"title": "Q", "questions": [QUESTION]})
    published = await client.request("PATCH", url, json={"status": "published"}, headers=headers)
    assert published.status_code == 200, published.text
    await post(f"{url}/enrollments", None)
    path = await post("/v1/paths", {"title": "P", "course_ids": [course["id"]]})
    statement = {
        "actor": {"mbox": "mailto:ada@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": "https://example.com/activities/intro"},
    }
    ids = await client.request("POST", "/v1/xapi/statements", json=[statement], headers=headers)
    assert ids.status_code == 200, ids.text
    return {
        "course_id": course["id"],
        "module_id": module["id"],
        "lesson_id": lesson["id"],
        "quiz_id": quiz["id"],
        "path_id": path["id"],
        "statement_id": ids.json()[0],
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/courses/{course_id}"): {"title": "Taken over"},
        ("POST", "/v1/courses/{course_id}/modules"): {"title": "Planted"},
        ("POST", "/v1/courses/{course_id}/modules/{module_id}/lessons"): {"title": "Planted"},
        ("POST", "/v1/courses/{course_id}/modules/{module_id}/quizzes"): {
            "title": "Planted",
            "questions": [QUESTION],
        },
        ("POST", "/v1/courses/{course_id}/quizzes/{quiz_id}/attempts"): {"answers": [[0]]},
    },
    unaddressed={
        ("POST", "/v1/courses"): "creates in the caller's org",
        ("POST", "/v1/paths"): "creates in the caller's org; its courses must be the caller's org's (422)",
        ("POST", "/v1/xapi/statements"): "stores in the caller's org; a statement id is unique per org",
        ("PUT", "/v1/xapi/statements"): "stores in the caller's org; a statement id is unique per org",
    },
)
