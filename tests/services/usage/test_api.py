"""usage through the gateway path `/api/usage`: ingestion, meters, tenancy and input rules, on both backends."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from coder.services.usage.models import Event
from coder.tests.services.usage.factories import (
    API,
    create_budget,
    create_meter,
    event,
    ingest,
    query,
    read_reservation,
    release,
    reserve,
    settle,
)
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner
from coder.tests.support.workload import SPENDER, direct

DAY1, DAY2, DAY3 = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-03T00:00:00Z"


def sample() -> list[dict[str, Any]]:
    """Four AI requests over two days, and one event of another type that no meter below counts."""
    return [
        event(time="2024-05-01T10:05:00Z", model="gpt-4o", user_id="u1", cost_usd=0.5, prompt_tokens=100),
        event(time="2024-05-01T10:20:00Z", model="gpt-4o", user_id="u2", cost_usd=1.5, prompt_tokens=300),
        event(time="2024-05-01T11:10:00Z", model="claude", user_id="u1", cost_usd="2.0", prompt_tokens=50),
        event(
            time="2024-05-02T09:00:00Z",
            model="claude",
            user_id="u2",
            cost_usd=4,
            prompt_tokens=1000,
            feature="chat",
        ),
        event(
            "ai.embedding.completed", time="2024-05-01T10:30:00Z", model="gpt-4o", user_id="u3", cost_usd=9
        ),
    ]


def rows(response: Any) -> list[tuple[Any, ...]]:
    assert response.status_code == 200, response.text
    return [(r["window_start"], r["value"], r["group"]) for r in response.json()["data"]]


async def test_batch_ingest_is_idempotent(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=["usage:ingest", "usage:read", "usage:admin"])
    meter = await create_meter(platform, h)
    batch = sample()
    assert await ingest(platform, h, batch) == {"accepted": 5, "duplicates": 0}
    before = await query(platform, h, meter["slug"], **{"from": DAY1, "to": DAY3})

    assert await ingest(platform, h, batch) == {"accepted": 0, "duplicates": 5}
    repeated = event(model="gpt-4o", cost_usd=1)
    assert await ingest(platform, h, [repeated, repeated, *batch[:2]]) == {"accepted": 1, "duplicates": 3}
    # The id is unique per source, not globally.
    assert await ingest(platform, h, [{**repeated, "source": "/elsewhere"}]) == {
        "accepted": 1,
        "duplicates": 0,
    }

    after = await query(platform, h, meter["slug"], **{"from": DAY1, "to": DAY3})
    assert rows(after) == rows(before) == [(DAY1, 8.0, {})]


async def test_ingest_takes_the_org_from_the_token(platform: Platform, signer: TestSigner, org: str) -> None:
    other = f"org-{uuid.uuid4().hex[:12]}"
    body = {**event(cost_usd=1), "orgid": other}
    assert await ingest(platform, signer.headers(org), [body]) == {"accepted": 1, "duplicates": 0}
    # The same id in another org is another event.
    assert await ingest(platform, signer.headers(other), [body]) == {"accepted": 1, "duplicates": 0}
    async with platform.runtime.sessions() as session:
        stored = await session.scalar(select(func.count()).where(Event.event_id == body["id"]))
        mine = await session.get(Event, (org, body["source"], body["id"]))
    assert stored == 2
    assert mine is not None and mine.user_id is None and mine.data == {"cost_usd": 1}
    assert mine.time is not None  # no time given: the time it was ingested


async def test_ingest_stores_each_attribute_and_dimension_as_sent(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    data: dict[str, Any] = {
        "user_id": "u-é",
        "team_id": "t1",
        "api_key_id": "k1",
        "model": "m\u2028x",
        "feature": None,
        "nested": {"list": [1, 2.5, "three", None, True], "big": 2**62},
    }
    # An offset PostgreSQL does not read from text (beyond 15:59): the instant is stored.
    full = {**event(**data), "time": "2024-05-01T10:05:00.123456+19:30", "subject": "req-1", "ext": "x"}
    bare = event("other.type", id=full["id"], source="/another")
    assert await ingest(platform, signer.headers(org), [full, bare]) == {"accepted": 2, "duplicates": 0}
    async with platform.runtime.sessions() as session:
        stored = await session.get(Event, (org, full["source"], full["id"]))
        other = await session.get(Event, (org, "/another", full["id"]))
    assert stored is not None and other is not None
    assert (stored.type, stored.subject, stored.data) == ("ai.request.completed", "req-1", data)
    assert stored.time == datetime.fromisoformat(full["time"])
    dimensions = (stored.user_id, stored.team_id, stored.api_key_id, stored.model, stored.feature)
    assert dimensions == ("u-é", "t1", "k1", "m\u2028x", None)
    assert (other.type, other.subject, other.data, other.user_id) == ("other.type", None, {}, None)


async def test_ingest_accepts_the_cloudevents_batch_media_type(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    headers = {**signer.headers(org), "content-type": "application/cloudevents-batch+json"}
    response = await platform.client.post(f"{API}/events", content=json.dumps([event()]), headers=headers)
    assert response.status_code == 200 and response.json() == {"accepted": 1, "duplicates": 0}


@pytest.mark.parametrize("media", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_ingest_refuses_a_body_that_is_not_json(
    platform: Platform, signer: TestSigner, org: str, media: str
) -> None:
    headers = {**signer.headers(org), "content-type": media}
    response = await platform.client.post(f"{API}/events", content=json.dumps([event()]), headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["header.content-type"]
    assert media in response.json()["detail"]
    async with platform.runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Event).where(Event.org_id == org)) == 0


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32-le"])
async def test_ingest_reads_every_json_encoding(
    platform: Platform, signer: TestSigner, org: str, encoding: str
) -> None:
    """A UTF-8 body is stored as sent; one that PostgreSQL cannot read as is (a byte order mark, UTF-16
    or -32, which JSON parsers read) is stored all the same, serialized again."""
    sent = event(time="2024-05-01T10:05:00.5-23:59", user_id="u-é", cost_usd=0.5, tags=["a", {"b": None}])
    headers = {**signer.headers(org), "content-type": "application/json"}
    body = json.dumps([sent], ensure_ascii=False).encode(encoding)
    response = await platform.client.post(f"{API}/events", content=body, headers=headers)
    assert response.status_code == 200 and response.json() == {"accepted": 1, "duplicates": 0}, response.text
    async with platform.runtime.sessions() as session:
        stored = await session.get(Event, (org, sent["source"], sent["id"]))
    assert stored is not None and stored.data == sent["data"] and stored.user_id == "u-é"
    assert stored.time == datetime.fromisoformat(sent["time"])


async def test_meter_aggregations_windows_and_groups(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    await ingest(platform, h, sample())
    cost = await create_meter(platform, h)
    requests = await create_meter(platform, h, aggregation="count", value_property=None, group_by=["model"])
    biggest = await create_meter(platform, h, aggregation="max", value_property="prompt_tokens")
    users = await create_meter(
        platform, h, aggregation="unique_count", value_property="user_id", group_by=["feature"]
    )
    whole = {"from": DAY1, "to": DAY3}

    by_hour = await query(
        platform,
        h,
        cost["slug"],
        **{"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T12:00:00Z"},
        window_size="HOUR",
        group_by="model",
    )
    assert rows(by_hour) == [
        ("2024-05-01T10:00:00Z", 2.0, {"model": "gpt-4o"}),
        ("2024-05-01T11:00:00Z", 2.0, {"model": "claude"}),
    ]
    assert by_hour.json()["data"][0]["window_end"] == "2024-05-01T11:00:00Z"

    by_day = await query(platform, h, cost["slug"], **whole, window_size="DAY", group_by="user_id")
    assert rows(by_day) == [
        ("2024-05-01T00:00:00Z", 2.5, {"user_id": "u1"}),
        ("2024-05-01T00:00:00Z", 1.5, {"user_id": "u2"}),
        ("2024-05-02T00:00:00Z", 4.0, {"user_id": "u2"}),
    ]

    two_groups = await query(platform, h, cost["slug"], **whole, group_by=["model", "user_id"])
    assert [(r[1], r[2]) for r in rows(two_groups)] == [
        (2.0, {"model": "claude", "user_id": "u1"}),
        (4.0, {"model": "claude", "user_id": "u2"}),
        (0.5, {"model": "gpt-4o", "user_id": "u1"}),
        (1.5, {"model": "gpt-4o", "user_id": "u2"}),
    ]
    assert {r["window_end"] for r in two_groups.json()["data"]} == {"2024-05-03T00:00:00Z"}

    by_minute = await query(
        platform,
        h,
        requests["slug"],
        **{"from": "2024-05-01T10:00:00Z", "to": "2024-05-01T10:30:00Z"},
        window_size="MINUTE",
    )
    assert rows(by_minute) == [("2024-05-01T10:05:00Z", 1.0, {}), ("2024-05-01T10:20:00Z", 1.0, {})]
    counted = await query(platform, h, requests["slug"], **whole, group_by="model")
    assert [(r[1], r[2]) for r in rows(counted)] == [(2.0, {"model": "claude"}), (2.0, {"model": "gpt-4o"})]

    assert [r[1] for r in rows(await query(platform, h, biggest["slug"], **whole))] == [1000.0]
    filtered = await query(platform, h, biggest["slug"], **whole, model="gpt-4o")
    assert [r[1] for r in rows(filtered)] == [300.0]
    two_users = await query(platform, h, biggest["slug"], **whole, user_id=["u1", "u2"], model="claude")
    assert [r[1] for r in rows(two_users)] == [1000.0]

    distinct = await query(platform, h, users["slug"], **whole, window_size="DAY")
    assert [(r[0], r[1]) for r in rows(distinct)] == [
        ("2024-05-01T00:00:00Z", 2.0),
        ("2024-05-02T00:00:00Z", 1.0),
    ]
    per_feature = await query(platform, h, users["slug"], **whole, group_by="feature")
    assert [(r[1], r[2]) for r in rows(per_feature)] == [(1.0, {"feature": "chat"}), (2.0, {"feature": None})]


async def test_meter_windows_in_a_time_zone(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await ingest(platform, h, sample())
    meter = await create_meter(platform, h)
    result = await query(
        platform,
        h,
        meter["slug"],
        **{"from": DAY1, "to": DAY3},
        window_size="DAY",
        window_time_zone="America/New_York",
    )
    assert result.json()["window_time_zone"] == "America/New_York"
    assert [(r["window_start"], r["window_end"], r["value"]) for r in result.json()["data"]] == [
        ("2024-05-01T04:00:00Z", "2024-05-02T04:00:00Z", 4.0),
        ("2024-05-02T04:00:00Z", "2024-05-03T04:00:00Z", 4.0),
    ]


async def test_meter_values_ignore_what_is_not_a_number(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    meter = await create_meter(
        platform, h, event_type="custom.usage", value_property="usage.tokens", group_by=[]
    )
    await ingest(
        platform,
        h,
        [
            event("custom.usage", usage={"tokens": 5}),
            event("custom.usage", usage={"tokens": " 7.5 "}),
            event("custom.usage", usage={"tokens": "many"}),
            event("custom.usage", usage={"tokens": [1]}),
            event("custom.usage", other=1),
        ],
    )
    result = await query(platform, h, meter["slug"])
    assert [r[1] for r in rows(result)] == [12.5]
    assert result.json()["from"] is None and result.json()["data"][0]["window_start"] is None
    empty = await create_meter(platform, h, event_type="never.sent", aggregation="max")
    assert [r[1] for r in rows(await query(platform, h, empty["slug"]))] == [0.0]
    assert rows(await query(platform, h, empty["slug"], **{"from": DAY1}, window_size="DAY")) == []


async def test_meter_crud_and_pages(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, perms=["usage:read", "usage:admin"])
    slugs = sorted([(await create_meter(platform, h, slug=f"meter-{i}"))["slug"] for i in range(3)])
    duplicate = await platform.client.post(
        f"{API}/meters",
        headers=h,
        json={"slug": "meter-0", "name": "again", "event_type": "x", "aggregation": "count"},
    )
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["field"] == "slug"

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        listed = (await platform.client.get(f"{API}/meters", params=params, headers=h)).json()
        seen += [m["slug"] for m in listed["items"]]
        if not (cursor := listed["next_cursor"]):
            break
    assert seen == slugs

    one = (await platform.client.get(f"{API}/meters/meter-1", headers=h)).json()
    assert one["aggregation"] == "sum" and one["group_by"] == ["model", "user_id"]
    assert (await platform.client.delete(f"{API}/meters/meter-1", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/meters/meter-1", headers=h)).status_code == 404
    assert (await platform.client.delete(f"{API}/meters/meter-1", headers=h)).status_code == 404


async def test_permissions_are_checked(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    reader = signer.headers(org, perms=["usage:read"])
    denied = await platform.client.post(
        f"{API}/meters",
        headers=reader,
        json={"slug": "x", "name": "x", "event_type": "x", "aggregation": "count"},
    )
    assert denied.status_code == 403 and denied.json()["required"] == "usage:admin"
    assert (await platform.client.post(f"{API}/events", headers=reader, json=[event()])).status_code == 403
    ingester = signer.headers(org, perms=["usage:ingest"])
    assert (await platform.client.get(f"{API}/budgets", headers=ingester)).status_code == 403
    # A SERVICE action: only a workload token of a target granted it, whatever a user's token holds.
    held = (await reserve(platform, spender, 1)).json()["reservation_id"]
    for perms in (["usage:read"], ["usage:reserve"], ["usage:*"], ["*"]):
        user = signer.headers(org, perms=perms)
        for answer in (
            await reserve(platform, user, 1),
            await platform.client.post(
                f"{API}/reservations", json={"amount": 1, "user_id": "u1"}, headers=user
            ),
            await read_reservation(platform, user, held),
            await settle(platform, user, held, 1),
            await release(platform, user, held),
        ):
            assert answer.status_code == 403, (perms, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["required"] == "usage:reserve"
    assert (await read_reservation(platform, spender, held)).json()["status"] == "reserved"


async def test_another_org_gets_404_for_every_id(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    mine = signer.headers(org)
    other = f"org-{uuid.uuid4().hex[:12]}"
    theirs = signer.headers(other)
    theirs_spending = signer.workload_headers(other, audience="usage", caller=SPENDER.name)
    meter = (await create_meter(platform, mine))["slug"]
    budget = (await create_budget(platform, mine))["id"]
    reservation = (await reserve(platform, spender, 1)).json()["reservation_id"]
    attempts = [
        ("GET", f"/meters/{meter}", None),
        ("DELETE", f"/meters/{meter}", None),
        ("GET", f"/meters/{meter}/query", None),
        ("GET", f"/budgets/{budget}", None),
        ("PATCH", f"/budgets/{budget}", {"limit": 1}),
        ("DELETE", f"/budgets/{budget}", None),
    ]
    # Reservations: as a calling target would for a user of the other org.
    spending = [
        ("GET", f"/reservations/{reservation}", None),
        ("POST", f"/reservations/{reservation}/settle", {"actual": 1}),
        ("DELETE", f"/reservations/{reservation}", None),
    ]
    answers = [await platform.client.request(m, API + p, json=b, headers=theirs) for m, p, b in attempts]
    answers += [
        await direct(platform, "usage", m, "/v1" + p, theirs_spending, json=b) for m, p, b in spending
    ]
    for (method, path, _), response in zip(attempts + spending, answers, strict=True):
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert (await platform.client.get(f"{API}/meters", headers=theirs)).json()["items"] == []
    assert (await platform.client.get(f"{API}/budgets", headers=theirs)).json()["items"] == []
    # Untouched for its owner.
    assert (await read_reservation(platform, spender, reservation)).json()["status"] == "reserved"
    assert (await platform.client.get(f"{API}/budgets/{budget}", headers=mine)).json()["reserved"] == 1.0


BAD_INPUT: list[tuple[str, str, Any, dict[str, Any] | None, str]] = [
    ("POST", "/events", [event()] * 1001, None, "body"),
    ("POST", "/events", [], None, "body"),
    ("POST", "/events", [{"source": "/x", "type": "t"}], None, "body.0.id"),
    ("POST", "/events", [event(time="2024-05-01T10:00:00")], None, "body.0.time"),
    ("POST", "/events", [{**event(), "specversion": "0.3"}], None, "body.0.specversion"),
    ("POST", "/events", [event(user_id=5)], None, "body.0.data.user_id"),
    ("POST", "/events", [{**event(), "data": "text"}], None, "body.0.data"),
    (
        "POST",
        "/meters",
        {"slug": "Bad Slug", "name": "m", "event_type": "t", "aggregation": "count"},
        None,
        "body.slug",
    ),
    (
        "POST",
        "/meters",
        {"slug": "m", "name": "m", "event_type": "t", "aggregation": "avg"},
        None,
        "body.aggregation",
    ),
    (
        "POST",
        "/meters",
        {"slug": "m", "name": "m", "event_type": "t", "aggregation": "sum"},
        None,
        "value_property",
    ),
    (
        "POST",
        "/meters",
        {"slug": "m", "name": "m", "event_type": "t", "aggregation": "count", "value_property": "cost_usd"},
        None,
        "value_property",
    ),
    (
        "POST",
        "/meters",
        {"slug": "m", "name": "m", "event_type": "t", "aggregation": "count", "group_by": ["org"]},
        None,
        "body.group_by.0",
    ),
    ("GET", "/meters/{meter}/query", None, {"from": DAY2, "to": DAY1}, "query.from"),
    (
        "GET",
        "/meters/{meter}/query",
        None,
        {"from": DAY1, "to": "2024-05-09T00:00:00Z", "window_size": "MINUTE"},
        "query.window_size",
    ),
    ("GET", "/meters/{meter}/query", None, {"window_size": "HOUR"}, "query.from"),
    ("GET", "/meters/{meter}/query", None, {"window_size": "WEEK"}, "query.window_size"),
    ("GET", "/meters/{meter}/query", None, {"group_by": "feature"}, "query.group_by"),
    ("GET", "/meters/{meter}/query", None, {"window_time_zone": "Mars/Olympus"}, "query.window_time_zone"),
    ("GET", "/meters/{meter}/query", None, {"from": "yesterday"}, "query.from"),
    ("GET", "/meters/{meter}/query", None, {"to": "2024-05-01T10:00:00"}, "query.to"),
    ("GET", "/meters/{meter}/query", None, {"from": "0001-01-01T00:00:00+01:00"}, "query.from"),
    ("GET", "/meters/{meter}/query", None, {"to": "9999-12-31T23:59:59-01:00"}, "query.to"),
    ("GET", "/meters/{meter}", None, {}, ""),  # well-formed: the control
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "scope_id": "x", "metric": "cost_usd", "limit": 1, "period": "day"},
        None,
        "scope_id",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "user", "metric": "cost_usd", "limit": 1, "period": "day"},
        None,
        "scope_id",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "metric": "cost_usd", "limit": -1, "period": "day"},
        None,
        "body.limit",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "metric": "cost_usd", "limit": 0.1234567, "period": "day"},
        None,
        "body.limit",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "metric": "euros", "limit": 1, "period": "day"},
        None,
        "body.metric",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "metric": "tokens", "limit": 1.5, "period": "week"},
        None,
        "body.period",
    ),
    (
        "POST",
        "/budgets",
        {"name": "b", "scope": "org", "metric": "tokens", "limit": 1.5, "period": "day"},
        None,
        "limit",
    ),
    ("GET", "/budgets", None, {"scope": "galaxy"}, "query.scope"),
    ("GET", "/budgets/not-a-uuid", None, None, "path.budget_id"),
    ("PATCH", "/budgets/{budget}", {"limit": "lots"}, None, "body.limit"),
    ("PATCH", "/budgets/{budget}", {"period": "day"}, None, "body.period"),
    ("POST", "/reservations", {"amount": 1}, None, "body.user_id"),
    ("POST", "/reservations", {"amount": 1, "user_id": "u1", "ttl_seconds": 3601}, None, "body.ttl_seconds"),
    ("POST", "/reservations", {"amount": -1, "user_id": "u1"}, None, "body.amount"),
    ("POST", "/reservations", {"amount": 2.5, "user_id": "u1", "metric": "tokens"}, None, "amount"),
    ("POST", "/reservations/{reservation}/settle", {}, None, "body.actual"),
    ("POST", "/reservations/{reservation}/settle", {"actual": 1e13}, None, "body.actual"),
    ("GET", "/reservations/123", None, None, "path.reservation_id"),
    ("DELETE", "/reservations/123", None, None, "path.reservation_id"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "field"),
    BAD_INPUT,
    ids=[f"{m} {p} {f or 'ok'}" for m, p, _, _, f in BAD_INPUT],
)
async def test_bad_input_is_a_problem_naming_the_field(
    platform: Platform,
    signer: TestSigner,
    org: str,
    method: str,
    path: str,
    body: Any,
    params: dict[str, Any] | None,
    field: str,
    spender: dict[str, str],
) -> None:
    h = signer.headers(org)
    meter = (await create_meter(platform, h, group_by=["model"]))["slug"]
    budget = (await create_budget(platform, h, metric="tokens", limit=100))["id"]
    reservation = (await reserve(platform, spender, 1)).json()["reservation_id"]
    address = path.format(meter=meter, budget=budget, reservation=reservation)
    if path.startswith("/reservations"):  # a SERVICE action: called by a target, with its workload token
        response = await direct(platform, "usage", method, "/v1" + address, spender, json=body, params=params)
    else:
        response = await platform.client.request(method, API + address, json=body, params=params, headers=h)
    if not field:
        assert response.status_code == 200
        return
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/validation")
    assert field in [e["field"] for e in problem["errors"]], problem


async def test_a_zone_only_python_knows_is_named_not_a_500(
    platform: Platform, signer: TestSigner, org: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coder.services.usage import meters

    h = signer.headers(org)
    await ingest(platform, h, sample())
    meter = await create_meter(platform, h)
    monkeypatch.setattr(meters, "_time_zone", lambda name: SimpleNamespace(key="Nowhere/Atlantis"))
    response = await query(
        platform, h, meter["slug"], **{"from": DAY1}, window_size="DAY", window_time_zone="Nowhere/Atlantis"
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "query.window_time_zone"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ('{"id": "e1", "source": "s", "type": "t", "subject": "a\\u0000b"}', "body.0.subject"),
        ('{"id": "e1", "source": "s", "type": "t", "data": {"model": "\\ud800"}}', "body.0.data.model"),
        ('{"id": "e1", "source": "s", "type": "t", "data": {"tokens": NaN}}', "body.0.data.tokens"),
        (
            '{"id": "e1", "source": "s", "type": "t", "data": {"cost": {"usd": 1e400}}}',
            "body.0.data.cost.usd",
        ),
        ('{"id": "e1", "source": "s", "type": "t", "traceext": "\\u0000"}', "body.0.traceext"),
        ('{"id": "e1", "source": "s", "type": "t", "time": "0001-01-01T00:00:00+01:00"}', "body.0.time"),
    ],
)
async def test_an_event_field_that_cannot_be_stored_is_named(
    platform: Platform, signer: TestSigner, org: str, event: str, field: str
) -> None:
    h = {**signer.headers(org), "content-type": "application/json"}
    response = await platform.client.post(f"{API}/events", content=f"[{event}]", headers=h)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]], response.text
    async with platform.runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Event).where(Event.org_id == org)) == 0


async def test_a_query_filter_that_is_not_text_is_named(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    for url, field in (
        (f"{API}/budgets?scope_id=%00", "query.scope_id"),
        (f"{API}/meters/m/query?model=a%00", "query.model"),
        (f"{API}/meters/m/query?feature=%ED%A0%80", "query.feature"),
    ):
        response = await platform.client.get(url, headers=h)
        assert response.status_code == 422, (url, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_a_forged_cursor_is_a_400_naming_it(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await create_budget(platform, h, metric="tokens", limit=100)
    forged = base64.urlsafe_b64encode(json.dumps([12, str(uuid.uuid4())]).encode()).decode()
    for url in (f"{API}/budgets", f"{API}/meters"):
        response = await platform.client.get(url, params={"cursor": forged}, headers=h)
        assert response.status_code == 400, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["query.cursor"]
