"""The xAPI statement store: idempotent ids, conflicts, queries by agent, verb, activity and stored time
with `more` paging, and who may send and read what."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from coder.tests.services.learning.factories import API, ok, people
from coder.tests.services.learning.test_courses import problem
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner

URL = f"{API}/xapi/statements"
ADA = {"mbox": "mailto:ada@example.com", "name": "Ada"}
EXPERIENCED = "http://adlnet.gov/expapi/verbs/experienced"
ANSWERED = "http://adlnet.gov/expapi/verbs/answered"


def statement(
    verb: str = EXPERIENCED, activity: str = "https://example.com/a/1", **extra: Any
) -> dict[str, Any]:
    return {
        "actor": ADA,
        "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[-1]}},
        "object": {"id": activity, "definition": {"name": {"en-US": "Intro"}}},
        **extra,
    }


async def test_a_statement_id_is_stored_once_and_never_reused(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = people(signer, org).manager
    sid = str(uuid.uuid4())
    body = statement(
        id=sid,
        result={
            "score": {"scaled": 0.8, "raw": 8, "min": 0, "max": 10},
            "success": True,
            "duration": "PT1M30S",
        },
        context={
            "registration": str(uuid.uuid4()),
            "contextActivities": {"parent": [{"id": "https://example.com/c"}]},
        },
        timestamp="2026-01-02T03:04:05+00:00",
    )
    assert ok(await platform.client.post(URL, json=[body], headers=h)) == [sid]
    stored = ok(await platform.client.get(f"{URL}/{sid}", headers=h))
    assert stored["result"]["score"] == {"scaled": 0.8, "raw": 8, "min": 0, "max": 10}
    assert stored["context"]["contextActivities"]["parent"] == [
        {"objectType": "Activity", "id": "https://example.com/c"}
    ]
    assert stored["timestamp"].startswith("2026-01-02T03:04:05") and stored["version"] == "1.0.3"
    assert stored["authority"]["objectType"] == "Agent" and stored["stored"]

    # The same statement again: accepted, nothing new. Different content under that id: 409.
    put = await platform.client.put(URL, params={"statementId": sid}, json=body, headers=h)
    assert put.status_code == 204, put.text
    changed = problem(
        await platform.client.post(URL, json=[{**body, "verb": {"id": ANSWERED}}], headers=h), 409
    )
    assert changed["type"].endswith("/statement-conflict") and changed["id"] == sid
    found = ok(
        await platform.client.get(URL, params={"agent": '{"mbox": "mailto:ada@example.com"}'}, headers=h)
    )
    assert [s["id"] for s in found["statements"]] == [sid]
    # A batch is all or none.
    fresh = str(uuid.uuid4())
    batch = [statement(id=fresh), {**body, "result": {"success": False}}]
    assert (await platform.client.post(URL, json=batch, headers=h)).status_code == 409
    assert (await platform.client.get(f"{URL}/{fresh}", headers=h)).status_code == 404


async def test_statements_are_refused_with_the_field_named(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = people(signer, org).manager
    cases = [
        (
            {
                **statement(),
                "actor": {"mbox": "mailto:a@b.c", "account": {"homePage": "https://x", "name": "a"}},
            },
            "actor",
        ),
        ({**statement(), "actor": {"name": "nobody"}}, "actor"),
        (statement(verb="completed"), "verb.id"),
        (statement(result={"duration": "90 seconds"}), "result.duration"),
        (statement(result={"score": {"scaled": 2}}), "result.score.scaled"),
        (statement(result={"score": {"raw": 11, "max": 10}}), "result.score"),
        ({**statement(), "stored": "2026-01-01T00:00:00Z"}, "stored"),
    ]
    for body, field in cases:
        refused = problem(await platform.client.post(URL, json=[statement(), body], headers=h), 422)
        fields = [e["field"] for e in refused["errors"]]
        assert any(f == f"body.1.{field}" or f.startswith(f"body.1.{field}.") for f in fields), (
            field,
            refused,
        )
        one = problem(
            await platform.client.put(URL, params={"statementId": str(uuid.uuid4())}, json=body, headers=h),
            422,
        )
        assert any(
            f == f"body.{field}" or f.startswith(f"body.{field}.")
            for f in [e["field"] for e in one["errors"]]
        )
    agent = problem(await platform.client.get(URL, params={"agent": "ada"}, headers=h), 422)
    assert agent["errors"][0]["field"] == "query.agent"


async def test_queries_filter_and_page_with_more(platform: Platform, signer: TestSigner, org: str) -> None:
    h = people(signer, org).manager
    ids = ok(
        await platform.client.post(
            URL,
            json=[
                statement(activity=f"https://example.com/a/{n}", verb=ANSWERED if n % 2 else EXPERIENCED)
                for n in range(5)
            ],
            headers=h,
        )
    )
    assert len(ids) == 5
    later = ok(
        await platform.client.post(URL, json=[statement(activity="https://example.com/a/9")], headers=h)
    )

    answered = ok(await platform.client.get(URL, params={"verb": ANSWERED}, headers=h))
    assert sorted(s["id"] for s in answered["statements"]) == sorted([ids[1], ids[3]])
    one = ok(await platform.client.get(URL, params={"activity": "https://example.com/a/2"}, headers=h))
    assert [s["id"] for s in one["statements"]] == [ids[2]]

    first = ok(await platform.client.get(URL, params={"limit": 4}, headers=h))
    assert first["statements"][0]["id"] == later[0]  # newest stored first
    assert first["more"].startswith("/v1/xapi/statements?") and "limit=4" in first["more"]
    rest = ok(await platform.client.get(f"/api/learning{first['more']}", headers=h))
    assert rest["more"] == ""
    seen = [s["id"] for s in first["statements"] + rest["statements"]]
    assert sorted(seen) == sorted([*ids, *later]) and len(set(seen)) == 6

    cut = first["statements"][0]["stored"]
    since = ok(await platform.client.get(URL, params={"since": cut}, headers=h))
    assert since["statements"] == []
    until = ok(await platform.client.get(URL, params={"until": cut, "ascending": "true"}, headers=h))
    assert [s["id"] for s in until["statements"]][-1] == later[0]
    old = ok(
        await platform.client.get(
            URL, params={"until": datetime(2000, 1, 1, tzinfo=UTC).isoformat()}, headers=h
        )
    )
    assert old["statements"] == []


async def test_a_learner_states_and_reads_only_their_own(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    who = people(signer, org)
    ok(await platform.client.post(URL, json=[statement()], headers=who.manager))  # about Ada
    about_ada = await platform.client.post(URL, json=[statement()], headers=who.learner)
    assert problem(about_ada, 403)["detail"].startswith("0.actor:")
    own = {"account": {"homePage": "https://coderide.io", "name": who.learner_id}}
    mine = ok(await platform.client.post(URL, json=[{**statement(), "actor": own}], headers=who.learner))
    seen = ok(await platform.client.get(URL, headers=who.learner))
    assert [s["id"] for s in seen["statements"]] == mine
    ada = ok(
        await platform.client.get(
            URL, params={"agent": '{"mbox": "mailto:ada@example.com"}'}, headers=who.learner
        )
    )
    assert ada["statements"] == []
    everyone = ok(await platform.client.get(URL, headers=who.manager))
    assert len(everyone["statements"]) == 2
