"""planning's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

DISTINCT_ID = 23  # not in "/v1", "404"...


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    plan = await client.request("POST", "/v1/plans", json={"title": "Plan"}, headers=headers)
    assert plan.status_code == 201, plan.text
    plan_id: str = plan.json()["id"]
    # Task ids count from 1 in each plan; the suite writes every addressed value back as its name in
    # the answers it compares, so the task named is one whose id no other text of an answer holds.
    task_id = 0
    while task_id < DISTINCT_ID:
        task = await client.request(
            "POST", f"/v1/plans/{plan_id}/tasks", json={"title": "T"}, headers=headers
        )
        assert task.status_code == 201, task.text
        task_id = task.json()["id"]
    return {"plan_id": plan_id, "task_id": str(task_id)}


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/plans/{plan_id}"): {"title": "Taken over"},
        ("POST", "/v1/plans/{plan_id}/tasks"): {"title": "Planted"},
        ("PATCH", "/v1/plans/{plan_id}/tasks/{task_id}"): {"title": "Taken over"},
        ("POST", "/v1/plans/{plan_id}/tasks/{task_id}/status"): {"status": "in-progress"},
        ("POST", "/v1/plans/{plan_id}/tasks/{task_id}/expand"): {"model": "any"},
    },
    unaddressed={
        ("POST", "/v1/plans"): "creates in the caller's org",
        ("POST", "/v1/plans/generate"): "creates a plan in the caller's org",
    },
)
