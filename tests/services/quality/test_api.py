"""quality through the gateway path `/api/quality`: analyses, new code, CI reports, the gate and its
events, on both backends."""

from __future__ import annotations

import io
import tarfile
import uuid
from typing import Any

from sqlalchemy import func, select

from coder.services.quality.models import Analysis
from coder.tests.services.quality.factories import (
    API,
    CLEAN,
    analyze,
    block,
    cobertura,
    create_project,
    gate,
    post_analysis,
    put_coverage,
)
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


def problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    if field is not None:
        assert [e["field"] for e in body.get("errors", [])] == [field], body
    return body


async def count_analyses(p: Platform) -> int:
    async with p.runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Analysis)) or 0)


async def issues(p: Platform, h: dict[str, str], key: str, **params: Any) -> list[dict[str, Any]]:
    response = await p.client.get(f"{API}/projects/{key}/issues", params={"limit": 200, **params}, headers=h)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


TANGLED = (
    "def tangled(x):\n"
    + "".join(f"    if x == {i}:\n        return {i}\n" for i in range(12))
    + "    return -1\n"
)


async def test_an_analysis_lints_measures_and_finds_duplication(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await create_project(platform, h, "app")
    files = {
        "app/core.py": "import os\n\n\ndef f():\n    return undefined_name\n",
        "app/rules.py": TANGLED,
        "app/one.py": block("shared"),
        "app/two.py": block("shared"),
        "README.md": "# App\n",
    }
    analysis = await analyze(platform, h, "app", files, commit="abc123")
    m = analysis["measures"]
    assert (analysis["branch"], analysis["pull_request"], analysis["commit"]) == ("main", None, "abc123")
    assert m["files"] == 5 and m["functions"] == 4
    assert m["complexity"] == 1 + 13 + 1 + 1
    assert m["duplicated_blocks"] == 2 and m["duplicated_lines"] == 2 * 15
    assert m["duplicated_lines_density"] == round(100 * 30 / m["lines"], 1)
    assert m["violations"] == 3 and m["critical_violations"] == 1 and m["major_violations"] == 2
    assert m["coverage"] is None and m["tests"] is None
    # The first analysis of a branch has no new code: nothing for the gate to fail on.
    assert m["new_lines"] == 0 and m["new_violations"] == 0
    assert analysis["gate"]["status"] == "OK" and analysis["gate"]["failing"] == []

    found = await issues(platform, h, "app")
    assert [(i["path"], i["line"], i["rule"], i["severity"]) for i in found] == [
        ("app/core.py", 1, "ruff:F401", "major"),
        ("app/core.py", 5, "ruff:F821", "critical"),
        ("app/rules.py", 1, "radon:cyclomatic-complexity", "major"),
    ]
    assert [i["rule"] for i in await issues(platform, h, "app", severity="critical")] == ["ruff:F821"]
    measures = (await platform.client.get(f"{API}/projects/app/measures", headers=h)).json()
    assert measures["measures"] == m and measures["analysis_id"] == analysis["id"]


async def test_new_code_drives_the_gate_and_its_events(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    received = await listen(platform, "quality.gate.*")
    plan_id = str(uuid.uuid4())
    await create_project(platform, h, "svc", plan_id=plan_id)
    first = await analyze(platform, h, "svc", {"svc/a.py": CLEAN}, commit="c1")
    # New code: a changed file with a finding on an added line, and a new file.
    second = await analyze(
        platform,
        h,
        "svc",
        {"svc/a.py": "import json\n" + CLEAN, "svc/b.py": "def sub(a, b):\n    return a - b\n"},
        commit="c2",
    )
    assert second["baseline_id"] == first["id"]
    m = second["measures"]
    assert (m["new_lines"], m["new_violations"], m["violations"]) == (3, 1, 1)
    assert [(i["path"], i["line"], i["new"]) for i in await issues(platform, h, "svc", new_code=True)] == [
        ("svc/a.py", 1, True)
    ]
    state = await gate(platform, h, "svc")
    assert state["status"] == "ERROR"
    assert [(c["metric"], c["actual"]) for c in state["failing"]] == [("new_violations", 1.0)]
    assert {c["metric"]: c["status"] for c in state["conditions"]} == {
        "new_coverage": "NONE",  # no coverage reported yet
        "new_violations": "ERROR",
        "new_duplicated_lines_density": "OK",
    }

    # CI reports coverage: the new lines a.py:1 and b.py:1-2; a.py:1 (import) hit, b.py:2 not.
    report = cobertura({"svc/a.py": {1: 1, 3: 1, 4: 1}, "svc/b.py": {1: 1, 2: 0}, "gone.py": {1: 1}})
    response = await put_coverage(platform, h, "svc", second["id"], report)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["matched_files"], body["unmatched"]) == (2, ["gone.py"])
    covered = body["analysis"]["measures"]
    assert (covered["lines_to_cover"], covered["uncovered_lines"], covered["coverage"]) == (5, 1, 80.0)
    assert (covered["new_lines_to_cover"], covered["new_uncovered_lines"]) == (3, 1)
    assert covered["new_coverage"] == round(200 / 3, 1)
    state = await gate(platform, h, "svc")
    assert {c["metric"] for c in state["failing"]} == {"new_violations", "new_coverage"}

    # Fixed: the import goes, and the new code against c2 is nothing.
    third = await analyze(
        platform, h, "svc", {"svc/a.py": CLEAN, "svc/b.py": "def sub(a, b):\n    return a - b\n"}, commit="c3"
    )
    assert third["gate"]["status"] == "OK" and third["measures"]["new_lines"] == 0

    def statuses() -> list[tuple[Any, ...]]:
        return [
            (e.data["previous_status"], e.data["status"], e.data["commit"])
            for e in received
            if e.data["project_key"] == "svc" and e.orgid == org
        ]

    await wait_until(lambda: len(statuses()) == 3, what="three gate changes")
    assert statuses() == [(None, "OK", "c1"), ("OK", "ERROR", "c2"), ("ERROR", "OK", "c3")]
    error = next(e for e in received if e.orgid == org and e.data["status"] == "ERROR")
    assert error.data["plan_id"] == plan_id and error.data["branch"] == "main"
    assert error.data["failing"] == [
        {"metric": "new_violations", "op": "gt", "threshold": 0.0, "actual": 1.0}
    ]
    # The coverage report changed the failing conditions but not the status: no event.


async def test_a_pull_request_is_measured_against_its_base(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await create_project(
        platform,
        h,
        "lib",
        conditions=[{"metric": "new_duplicated_lines_density", "op": "gt", "threshold": 3}],
    )
    base = await analyze(platform, h, "lib", {"lib/a.py": block("one")}, commit="m1")
    pull = await platform.client.post(
        f"{API}/projects/lib/pull-requests", json={"key": "7", "branch": "feat/x", "base": "main"}, headers=h
    )
    assert pull.status_code == 201, pull.text
    # The pull request copies a.py's function into a new file: all of b.py is new and duplicated.
    analysis = await analyze(
        platform,
        h,
        "lib",
        {"lib/a.py": block("one"), "lib/b.py": block("one")},
        commit="p1",
        pull_request="7",
    )
    assert analysis["baseline_id"] == base["id"] and analysis["pull_request"] == "7"
    m = analysis["measures"]
    assert (m["new_lines"], m["new_duplicated_lines"], m["new_duplicated_lines_density"]) == (15, 15, 100.0)
    state = await gate(platform, h, "lib", pull_request="7")
    assert state["status"] == "ERROR" and state["pull_request"] == "7"
    assert (await gate(platform, h, "lib"))["status"] == "OK"  # main is untouched
    # Loosening the gate settles every branch and pull request again.
    loosened = await platform.client.patch(
        f"{API}/projects/lib",
        json={"conditions": [{"metric": "new_duplicated_lines_density", "op": "gt", "threshold": 100}]},
        headers=h,
    )
    assert loosened.status_code == 200, loosened.text
    assert (await gate(platform, h, "lib", pull_request="7"))["status"] == "OK"
    pulls = (await platform.client.get(f"{API}/projects/lib/pull-requests", headers=h)).json()["items"]
    assert [(p["key"], p["branch"], p["base"], p["gate_status"]) for p in pulls] == [
        ("7", "feat/x", "main", "OK")
    ]


async def test_a_set_baseline_is_what_new_code_is_measured_against(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await create_project(platform, h, "base")
    v1 = await analyze(platform, h, "base", {"a.py": CLEAN}, commit="v1")
    await analyze(platform, h, "base", {"a.py": CLEAN + "X = 1\n"}, commit="v2")
    branch = (await platform.client.get(f"{API}/projects/base/branches", headers=h)).json()["items"][0]
    set_ = await platform.client.patch(
        f"{API}/projects/base/branches/{branch['id']}", json={"baseline_analysis_id": v1["id"]}, headers=h
    )
    assert set_.status_code == 200 and set_.json()["baseline_analysis_id"] == v1["id"]
    v3 = await analyze(platform, h, "base", {"a.py": CLEAN + "X = 1\nY = 2\n"}, commit="v3")
    assert v3["baseline_id"] == v1["id"] and v3["measures"]["new_lines"] == 2
    listed = (await platform.client.get(f"{API}/projects/base/analyses", headers=h)).json()["items"]
    assert [a["commit"] for a in listed] == ["v3", "v2", "v1"]
    unknown = await platform.client.patch(
        f"{API}/projects/base/branches/{branch['id']}",
        json={"baseline_analysis_id": str(uuid.uuid4())},
        headers=h,
    )
    problem(unknown, 422, "baseline_analysis_id")


async def test_ci_reports_tests_and_bad_xml_is_refused(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await create_project(
        platform, h, "ci", conditions=[{"metric": "test_failures", "op": "gt", "threshold": 0}]
    )
    analysis = await analyze(platform, h, "ci", {"m.py": CLEAN})
    url = f"{API}/projects/ci/analyses/{analysis['id']}"
    junit = '<testsuite><testcase name="a" classname="m"/><testcase name="b" classname="m"><failure/></testcase></testsuite>'
    reported = await platform.client.put(f"{url}/tests", json={"junit": junit}, headers=h)
    assert reported.status_code == 200, reported.text
    body = reported.json()
    assert body["tests"]["failing"] == [{"name": "m::b", "outcome": "failure"}]
    assert (
        body["measures"]["tests"],
        body["measures"]["test_failures"],
        body["measures"]["test_success_density"],
    ) == (2, 1, 50.0)
    assert body["gate"]["status"] == "ERROR"

    before = (await platform.client.get(url, headers=h)).json()
    problem(await platform.client.put(f"{url}/tests", json={"junit": "<testsuite>"}, headers=h), 422, "junit")
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite>&a;</testsuite>'
    problem(await platform.client.put(f"{url}/tests", json={"junit": bomb}, headers=h), 422, "junit")
    problem(
        await put_coverage(platform, h, "ci", analysis["id"], "<coverage><class/></coverage>"), 422, "report"
    )
    problem(await put_coverage(platform, h, "ci", analysis["id"], "<testsuite/>"), 422, "report")
    assert (await platform.client.get(url, headers=h)).json() == before


async def test_bad_submissions_name_the_field_and_store_nothing(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await create_project(platform, h, "bad")
    problem(
        await platform.client.post(f"{API}/projects", json={"key": "bad", "name": "again"}, headers=h), 409
    )
    problem(
        await platform.client.post(
            f"{API}/projects",
            json={"key": "k2", "name": "n", "conditions": [{"metric": "nope", "op": "gt", "threshold": 1}]},
            headers=h,
        ),
        422,
        "conditions.0.metric",
    )
    before = await count_analyses(platform)
    problem(
        await post_analysis(platform, h, "bad", {"ok.py": CLEAN, "../etc/x.py": "x"}), 422, "files.1.path"
    )
    problem(await post_analysis(platform, h, "bad", {"a": "x", "a/b.py": "y"}), 422, "files.0.path")
    problem(await post_analysis(platform, h, "bad", {"a.py": CLEAN}, pull_request="404"), 422, "pull_request")
    problem(
        await post_analysis(platform, h, "bad", {"a.py": CLEAN}, branch="x", pull_request="1"),
        422,
        "pull_request",
    )
    assert await count_analyses(platform) == before
    missing = await platform.client.get(f"{API}/projects/bad/gate", headers=h)
    assert problem(missing, 404)["type"].endswith("/no-analysis")
    problem(await platform.client.get(f"{API}/projects/nothing/gate", headers=h), 404)


def _tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_an_archive_upload_is_analysed(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await create_project(platform, h, "up")
    archive = _tarball({"src/m.py": b"import os\n", "logo.png": b"\x89PNG\x00"})
    url = f"{API}/projects/up/analyses/archive"
    headers = {**h, "content-type": "application/gzip"}
    response = await platform.client.post(
        url, params={"commit": "t1", "branch": "dev"}, content=archive, headers=headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["branch"], body["measures"]["files"], body["measures"]["violations"]) == ("dev", 1, 1)
    evil = _tarball({"../../escape.py": b"x = 1\n"})
    problem(
        await platform.client.post(url, params={"commit": "t2"}, content=evil, headers=headers),
        422,
        "archive",
    )
    problem(await platform.client.post(url, content=archive, headers=headers), 422, "query.commit")


async def test_another_orgs_project_is_not_there(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await create_project(platform, h, "mine")
    await analyze(platform, h, "mine", {"a.py": CLEAN})
    other = signer.headers(f"other-{org}")
    problem(await platform.client.get(f"{API}/projects/mine/gate", headers=other), 404)
    # The same key in another org is another project.
    await create_project(platform, other, "mine")
    reader = signer.headers(org, perms=["quality:read"])
    problem(await post_analysis(platform, reader, "mine", {"a.py": CLEAN}), 403)
