"""quality's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

from coder.tests.support.crossorg import CrossOrg, TargetClient

JUNIT = '<testsuite><testcase name="t" classname="c"/></testsuite>'
COVERAGE = '<coverage><packages><package><classes><class filename="m.py"><lines><line number="1" hits="1"/></lines></class></classes></package></packages></coverage>'


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    project = await client.request(
        "POST", "/v1/projects", json={"key": "proj.one", "name": "P"}, headers=headers
    )
    assert project.status_code == 201, project.text
    key = project.json()["key"]
    body = {"commit": "abc", "files": [{"path": "m.py", "content": "x = 1\n"}]}
    analysis = await client.request("POST", f"/v1/projects/{key}/analyses", json=body, headers=headers)
    assert analysis.status_code == 201, analysis.text
    branches = await client.request("GET", f"/v1/projects/{key}/branches", headers=headers)
    pull = await client.request(
        "POST",
        f"/v1/projects/{key}/pull-requests",
        json={"key": "pr77", "branch": "feature", "base": "main"},
        headers=headers,
    )
    assert pull.status_code == 201, pull.text
    return {
        "project_key": key,
        "branch_id": branches.json()["items"][0]["id"],
        "pull_request_key": "pr77",
        "analysis_id": analysis.json()["id"],
    }


registration = CrossOrg(
    create=create,
    bodies={
        ("PATCH", "/v1/projects/{project_key}"): {"name": "Taken over"},
        ("POST", "/v1/projects/{project_key}/branches"): {"name": "planted"},
        ("PATCH", "/v1/projects/{project_key}/branches/{branch_id}"): {"baseline_analysis_id": None},
        ("POST", "/v1/projects/{project_key}/pull-requests"): {"key": "9", "branch": "a", "base": "main"},
        ("POST", "/v1/projects/{project_key}/analyses"): {
            "commit": "x",
            "files": [{"path": "p.py", "content": "y = 2\n"}],
        },
        ("POST", "/v1/projects/{project_key}/analyses/archive"): "not an archive",
        ("PUT", "/v1/projects/{project_key}/analyses/{analysis_id}/tests"): {"junit": JUNIT},
        ("PUT", "/v1/projects/{project_key}/analyses/{analysis_id}/coverage"): {"report": COVERAGE},
    },
    unaddressed={("POST", "/v1/projects"): "creates in the caller's org"},
)
