"""dashboard through the gateway path `/api/dashboard`: dashboards of panels, their versions saved
against the version read and restored, which queries a panel may hold, who sees which dashboard, and
the aggregate with the caller's own permissions, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from coder.services.dashboard.service import path_problem
from coder.tests.services.dashboard.factories import API, create, ok, panel, save
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin",
        "/v1/%2e%2e/x",
        "/v1/%252e%252e/x",
        "/v2/x",
        "/v1/plans?x=1",
        "/v1//x",
        "/v1/a\\b",
        "v1/x",
    ],
)
def test_a_path_that_could_leave_the_targets_api_is_refused(path: str) -> None:
    assert path_problem(path) is not None


def test_a_targets_own_path_is_fine() -> None:
    assert path_problem("/v1/plans/5b2e/next") is None


async def test_every_save_is_a_version_saved_against_the_one_read(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, ("dashboard:*",), sub="ada")
    events = await listen(platform, "dashboard.dashboard.saved")
    first = await create(platform, h, panel(1, "learning"), message="start")
    assert first["version"] == 1 and first["owner_id"] == "ada" and first["team_id"] is None
    second = ok(await save(platform, h, first, title="Mine", message="rename"))
    assert (second["version"], second["title"]) == (2, "Mine")

    # Another editor still holding version 1 loses: 409 naming both, nothing saved.
    stale = problem(await save(platform, h, first, title="Theirs"), 409)
    assert stale["type"].endswith("/stale-version") and (stale["version"], stale["latest"]) == (1, 2)
    url = f"{API}/dashboards/{first['id']}"
    assert ok(await platform.client.get(url, headers=h))["title"] == "Mine"

    third = ok(await save(platform, h, second, panels=[panel(1, "learning"), panel(2)], message="text panel"))
    versions = ok(await platform.client.get(f"{url}/versions", headers=h))["items"]
    assert [(v["version"], v["author"], v["message"]) for v in versions] == [
        (3, "ada", "text panel"),
        (2, "ada", "rename"),
        (1, "ada", "start"),
    ]
    old = ok(await platform.client.get(f"{url}/versions/1", headers=h))
    assert (old["title"], [p["id"] for p in old["panels"]]) == ("Home", [1])

    restored = ok(await platform.client.post(f"{url}/versions/1/restore", json={}, headers=h))
    assert (restored["version"], restored["title"], restored["panels"]) == (4, "Home", first["panels"])
    latest = ok(await platform.client.get(f"{url}/versions", params={"limit": 1}, headers=h))["items"][0]
    assert (latest["version"], latest["restored_from"], latest["message"]) == (4, 1, "restored version 1")
    assert problem(await save(platform, h, third), 409)["latest"] == 4
    assert problem(await platform.client.get(f"{url}/versions/9", headers=h), 404)["detail"] == "no version 9"

    await wait_until(
        lambda: len([e for e in events if e.data["dashboard_id"] == first["id"]]) == 4, what="4 saves"
    )
    mine = [e.data for e in events if e.data["dashboard_id"] == first["id"]]
    assert sorted((d["version"], d["restored_from"]) for d in mine) == [
        (1, None),
        (2, None),
        (3, None),
        (4, 1),
    ]


async def test_panel_queries_are_checked_with_the_field_named(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org, ("dashboard:*",))
    cases = [
        ([panel(1, "nowhere")], "panels.0.query.target"),
        ([panel(1, "gateway", "/v1/orgs")], "panels.0.query.target"),
        ([panel(1, "dashboard", "/v1/dashboards")], "panels.0.query.target"),
        ([panel(1), panel(2, "planning", "/v1/../../internal/workload-token")], "panels.1.query.path"),
        ([panel(1, "planning", "/v1/%2e%2e/openapi.json")], "panels.0.query.path"),
        (
            [
                {
                    **panel(1, "planning", "/v1/plans"),
                    "query": {"target": "planning", "path": "/v1/plans", "method": "DELETE"},
                }
            ],
            "panels.0.query.method",
        ),
        ([panel(1), panel(1)], "panels.1.id"),
    ]
    for panels, field in cases:
        refused = problem(
            await platform.client.post(f"{API}/dashboards", json={"title": "x", "panels": panels}, headers=h),
            422,
        )
        assert refused["errors"][0]["field"] == field, refused
    off_grid = problem(
        await platform.client.post(
            f"{API}/dashboards",
            json={"title": "x", "panels": [panel(1, gridPos={"x": 20, "y": 0, "w": 6, "h": 2})]},
            headers=h,
        ),
        422,
    )
    assert off_grid["errors"][0]["field"] == "body.panels.0.gridPos"
    # A save is checked the same way, and the dashboard stays as it was.
    board = await create(platform, h, panel(1, "learning"))
    refused = problem(await save(platform, h, board, panels=[panel(1, "planning", "/v1/plans/../..")]), 422)
    assert refused["errors"][0]["field"] == "panels.0.query.path"
    assert ok(await platform.client.get(f"{API}/dashboards/{board['id']}", headers=h))["version"] == 1


async def test_own_dashboards_are_private_team_dashboards_shared(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    ada = signer.headers(org, ("dashboard:*",), sub="ada")
    bob = signer.headers(org, ("dashboard:*",), sub="bob")
    own = await create(platform, ada, title="Ada's")
    team = await create(platform, ada, title="Team", team_id="core")
    assert (team["owner_id"], team["team_id"]) == (None, "core")
    assert problem(await platform.client.get(f"{API}/dashboards/{own['id']}", headers=bob), 404)[
        "detail"
    ] == (f"no dashboard {own['id']}")
    assert problem(await save(platform, bob, own, title="Bob's now"), 404)
    assert ok(await platform.client.get(f"{API}/dashboards/{team['id']}", headers=bob))["title"] == "Team"
    listed = ok(await platform.client.get(f"{API}/dashboards", headers=bob))["items"]
    assert [d["id"] for d in listed] == [team["id"]]
    mine = ok(await platform.client.get(f"{API}/dashboards", params={"mine": "true"}, headers=ada))["items"]
    assert [d["id"] for d in mine] == [own["id"]]
    by_team = ok(await platform.client.get(f"{API}/dashboards", params={"team_id": "core"}, headers=ada))[
        "items"
    ]
    assert [d["id"] for d in by_team] == [team["id"]]
    viewer = signer.headers(org, ("dashboard:read",))
    assert problem(await save(platform, viewer, team, title="x"), 403)
    deleted = await platform.client.delete(f"{API}/dashboards/{team['id']}", headers=bob)
    assert deleted.status_code == 204
    assert problem(await platform.client.get(f"{API}/dashboards/{team['id']}", headers=ada), 404)


async def test_a_panel_shows_only_what_its_viewer_may_read(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    """One team dashboard, two viewers: planning's panel shows the plan to the one holding
    `planning:read` and `forbidden` to the other; a missing resource is `not_found`; a text panel has
    no query."""
    owner = signer.headers(org)
    plan = ok(await platform.client.post("/api/planning/v1/plans", json={"title": "Q3"}, headers=owner), 201)
    panels = [
        panel(1, "planning", f"/v1/plans/{plan['id']}"),
        panel(2, "learning", "/v1/courses", params={"limit": 5}),
        panel(3, "learning", f"/v1/courses/{uuid.uuid4()}"),
        panel(4),
    ]
    board = await create(platform, owner, *panels, team_id="core")
    planner = signer.headers(org, ("dashboard:read", "planning:read", "learning:read"))
    outsider = signer.headers(org, ("dashboard:read", "learning:read"))
    url = f"{API}/dashboards/{board['id']}/data"

    seen = ok(await platform.client.get(url, headers=planner))
    assert seen["dashboard"]["version"] == 1
    slots = {s["panel_id"]: s for s in seen["slots"]}
    assert (slots[1]["status"], slots[1]["data"]["title"]) == ("ok", "Q3")
    assert (slots[2]["status"], slots[2]["data"]) == ("ok", {"items": [], "next_cursor": None})
    assert (slots[3]["status"], slots[3]["http_status"]) == ("not_found", 404)
    assert slots[4]["status"] == "no_query"

    hidden = {s["panel_id"]: s for s in ok(await platform.client.get(url, headers=outsider))["slots"]}
    assert (hidden[1]["status"], hidden[1]["http_status"], hidden[1]["data"]) == ("forbidden", 403, None)
    assert "planning:read" in hidden[1]["detail"] and "Q3" not in str(hidden)
    assert hidden[2]["status"] == "ok"

    # Another org's plan is as missing as none.
    other = signer.headers(f"{org}-other")
    stranger = await create(platform, other, panel(1, "planning", f"/v1/plans/{plan['id']}"))
    foreign = ok(await platform.client.get(f"{API}/dashboards/{stranger['id']}/data", headers=other))[
        "slots"
    ][0]
    assert foreign["status"] == "not_found" and "Q3" not in str(foreign)
