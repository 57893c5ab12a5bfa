"""logging through the gateway path `/api/logging`: push, queries, label discovery, limits, deletion
and retention, tenancy, on both backends."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from coder.services.logging import service
from coder.services.logging.config import LoggingSettings
from coder.services.logging.models import Line
from coder.services.logging.schemas import PushRequest
from coder.shared.db import transaction
from coder.shared.errors import Problem
from coder.tests.services.logging.factories import (
    API,
    SECOND,
    lines,
    ns,
    push,
    push_raw,
    query,
    query_raw,
    stream,
)
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


def app_label() -> str:
    return f"app-{uuid.uuid4().hex[:8]}"


def assert_field(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    fields = [e.get("field") or ".".join(map(str, e.get("loc", []))) for e in body.get("errors", [])]
    assert any(f == field or f.endswith(field) for f in fields), (field, body)


async def test_push_then_query_by_labels_text_and_level(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    app = app_label()
    answer = await push(
        platform,
        h,
        stream({"app": app, "env": "prod"}, "GET /health 200", 'level=error msg="db timeout"', "POST /x 500"),
        stream({"app": app, "env": "stage"}, '{"level":"warn","msg":"slow query"}', "INFO started"),
        stream({"app": "other-" + app, "env": "prod"}, "timeout elsewhere"),
    )
    assert answer == {"accepted": 6, "streams": 3, "redacted": {}}

    assert await lines(platform, h, f'{{app="{app}", env="prod"}}', direction="forward") == [
        "GET /health 200",
        'level=error msg="db timeout"',
        "POST /x 500",
    ]
    assert await lines(platform, h, f'{{app="{app}"}} |= "timeout"') == ['level=error msg="db timeout"']
    assert await lines(platform, h, f'{{app=~"(other-)?{app}"}} |= "timeout"', direction="forward") == [
        'level=error msg="db timeout"',
        "timeout elsewhere",
    ]
    assert await lines(platform, h, f'{{app="{app}", env!="prod"}} != "slow"') == ["INFO started"]
    assert await lines(platform, h, f'{{app="{app}"}} |~ "[45]0[0-9]$"') == ["POST /x 500"]
    assert await lines(platform, h, f'{{app="{app}", env=~"pro.*"}} !~ "^(GET|POST)"') == [
        'level=error msg="db timeout"'
    ]
    # Levels come from metadata, labels or the line itself (Loki's detected_level).
    found = await query(platform, h, f'{{app="{app}"}}', level=["error", "warn"], direction="forward")
    assert [(i["level"], i["labels"]["env"]) for i in found] == [("error", "prod"), ("warn", "stage")]
    assert {i["level"] for i in await query(platform, h, f'{{app="{app}"}}', level="info")} == {"info"}


async def test_time_range_direction_and_keyset_pages(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    app = app_label()
    base = ns(600)
    await push(platform, h, stream({"app": app}, *[(f"line {i}", None, base + i * SECOND) for i in range(7)]))
    selector = f'{{app="{app}"}}'
    everything = await lines(platform, h, selector, direction="forward")
    assert everything == [f"line {i}" for i in range(7)]
    assert await lines(platform, h, selector) == list(reversed(everything))  # newest first by default

    window = await lines(
        platform, h, selector, start=str(base + 2 * SECOND), end=str(base + 5 * SECOND), direction="forward"
    )
    assert window == ["line 2", "line 3", "line 4"]  # start inclusive, end exclusive
    start = (
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=(base + 4 * SECOND) // 1000)
    ).isoformat()
    assert await lines(platform, h, selector, start=start, direction="forward") == [
        "line 4",
        "line 5",
        "line 6",
    ]

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3, "direction": "backward"}
        if cursor:
            params["cursor"] = cursor
        page = (await query_raw(platform, h, selector, **params)).json()
        seen += [item["line"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(everything))
    # Timestamps come back exactly as pushed (nanoseconds).
    item = (await query(platform, h, selector, limit=1, direction="forward"))[0]
    assert item["ts"] == str(base)


async def test_structured_metadata_links_trace_and_request(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    app, trace = app_label(), uuid.uuid4().hex
    await push(
        platform,
        h,
        stream(
            {"app": app},
            ("handled", {"trace_id": trace, "request_id": "req-1", "user": "u1"}),
            ("other", {"trace_id": uuid.uuid4().hex, "request_id": "req-2"}),
            "no ids",
        ),
    )
    found = await query(platform, h, f'{{app="{app}"}}', trace_id=trace)
    assert [(i["line"], i["trace_id"], i["request_id"], i["metadata"]["user"]) for i in found] == [
        ("handled", trace, "req-1", "u1")
    ]
    assert await lines(platform, h, "{}", request_id="req-2") == ["other"]


async def test_label_discovery(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await push(
        platform,
        h,
        stream({"app": "api", "env": "prod"}, "a"),
        stream({"app": "worker", "region": "eu"}, "b"),
        stream({"app": "cron"}, "old", at=ns(3 * 3600)),
    )
    names = await platform.client.get(f"{API}/labels", headers=h)
    assert names.json() == {"data": ["app", "env", "region"]}
    values = await platform.client.get(f"{API}/label/app/values", headers=h)
    assert values.json() == {"data": ["api", "worker"]}  # the last hour by default
    wider = await platform.client.get(
        f"{API}/label/app/values", params={"start": str(ns(4 * 3600))}, headers=h
    )
    assert wider.json() == {"data": ["api", "cron", "worker"]}
    missing = await platform.client.get(f"{API}/label/nope/values", headers=h)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"streams": [stream({f"l{i}": "v" for i in range(16)}, "x")]}, "streams.0.stream"),
        ({"streams": [stream({"bad-name": "v"}, "x")]}, "streams.0.stream.bad-name"),
        ({"streams": [stream({"app": "v" * 257}, "x")]}, "streams.0.stream.app"),
        ({"streams": [stream({"app": "a"}, "ok", "x" * (64 * 1024 + 1))]}, "streams.0.values.1.1"),
        ({"streams": [{"stream": {"app": "a"}, "values": [["12:00", "x"]]}]}, "streams.0.values.0.0"),
        (
            {"streams": [{"stream": {"app": "a"}, "values": [["9999999999999999999", "x"]]}]},
            "streams.0.values.0.0",
        ),
        ({"streams": [stream({"app": "a"}, ("x", {"bad key": "v"}))]}, "streams.0.values.0.2.bad key"),
        ({"streams": [stream({"app": "a"}, "nul \x00")]}, "streams.0.values.0.1"),
        ({"streams": []}, "streams"),
    ],
)
async def test_bad_pushes_name_the_field(
    platform: Platform, signer: TestSigner, org: str, body: dict[str, Any], field: str
) -> None:
    response = await platform.client.post(f"{API}/push", json=body, headers=signer.headers(org))
    assert_field(response, 422, field)
    assert await lines(platform, signer.headers(org), "{}") == []  # nothing of a refused push is stored


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"query": 'app="x"'}, "query.query"),
        ({"query": '{app="x"'}, "query.query"),
        ({"query": '{app=~"("}'}, "query.query"),
        ({"query": '{app="x"} |~ "[a-"'}, "query.query"),
        ({"query": '{app="x"} |= '}, "query.query"),
        ({"query": "{}", "start": "yesterday"}, "query.start"),
        ({"query": "{}", "start": "2", "end": "1"}, "query.start"),
        ({"query": "{}", "end": "99999999999999999999"}, "query.end"),
        ({"query": "{}", "level": "loud"}, "query.level.0"),
    ],
)
async def test_bad_queries_name_the_field(
    platform: Platform, signer: TestSigner, org: str, params: dict[str, Any], field: str
) -> None:
    response = await platform.client.get(f"{API}/query", params=params, headers=signer.headers(org))
    assert_field(response, 422, field)


async def test_a_regex_postgres_refuses_is_a_422(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    await push(platform, h, stream({"app": "re"}, "x"))
    # Valid for Python, not for PostgreSQL (a named group).
    response = await query_raw(platform, h, '{app="re"} |~ "(?P<n>a)b"')
    assert_field(response, 422, "query.query")


async def test_each_org_is_its_own_tenant(platform: Platform, signer: TestSigner, org: str) -> None:
    other = f"org-{uuid.uuid4().hex[:12]}"
    app = app_label()
    await push(platform, signer.headers(org), stream({"app": app}, "mine"))
    await push(platform, signer.headers(other), stream({"app": app}, "theirs"))
    assert await lines(platform, signer.headers(org), f'{{app="{app}"}}') == ["mine"]
    assert await lines(platform, signer.headers(other), "{}") == ["theirs"]
    deleted = await platform.client.post(
        f"{API}/delete", json={"query": f'{{app="{app}"}}'}, headers=signer.headers(other)
    )
    assert deleted.json() == {"deleted": 1}
    assert await lines(platform, signer.headers(org), f'{{app="{app}"}}') == ["mine"]


async def test_permissions(platform: Platform, signer: TestSigner, org: str) -> None:
    reader = signer.headers(org, perms=["logging:read"])
    pusher = signer.headers(org, perms=["logging:push", "logging:read"])
    assert (await push_raw(platform, reader, stream({"app": "p"}, "x"))).status_code == 403
    await push(platform, pusher, stream({"app": "p"}, "x"))
    body = {"query": '{app="p"}'}
    assert (await platform.client.post(f"{API}/delete", json=body, headers=pusher)).status_code == 403
    assert (
        await platform.client.put(f"{API}/retention", json={"days": 3}, headers=pusher)
    ).status_code == 403
    assert (
        await platform.client.get(f"{API}/query", headers=signer.headers(org, perms=[]))
    ).status_code == 403


async def test_delete_by_selector_filter_and_range(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    app, base = app_label(), ns(300)
    await push(
        platform,
        h,
        stream({"app": app, "env": "prod"}, *[(f"prod {i}", None, base + i * SECOND) for i in range(4)]),
        stream({"app": app, "env": "dev"}, ("dev 0", None, base)),
    )
    body = {"query": f'{{app="{app}", env="prod"}} != "prod 3"', "start": str(base + SECOND)}
    response = await platform.client.post(f"{API}/delete", json=body, headers=h)
    assert response.json() == {"deleted": 2}
    assert await lines(platform, h, f'{{app="{app}"}}', direction="forward") == ["prod 0", "dev 0", "prod 3"]
    bad = await platform.client.post(f"{API}/delete", json={"query": "app"}, headers=h)
    assert_field(bad, 422, "query")


async def test_retention_per_org(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    other = f"org-{uuid.uuid4().hex[:12]}"
    assert (await platform.client.get(f"{API}/retention", headers=h)).json() == {"days": 30, "default": True}
    put = await platform.client.put(f"{API}/retention", json={"days": 2}, headers=h)
    assert put.json() == {"days": 2, "default": False}
    day = 24 * 3600
    for headers in (h, signer.headers(other)):
        await push(
            platform,
            headers,
            stream({"app": "ret"}, ("three days old", None, ns(3 * day)), ("one day old", None, ns(day))),
        )
    settings = platform.runtime.config(LoggingSettings)
    async with transaction(platform.runtime.sessions) as session:
        await service.apply_retention(session, settings)
    week = {"start": str(ns(7 * day))}
    assert await lines(platform, h, "{}", **week) == ["one day old"]
    # The other org keeps the default 30 days.
    assert await lines(platform, signer.headers(other), "{}", **week) == ["one day old", "three days old"]
    # Past the default, lines of orgs without a retention go too.
    async with transaction(platform.runtime.sessions) as session:
        await service.apply_retention(session, settings, now=datetime.now(UTC) + timedelta(days=30))
    assert await lines(platform, signer.headers(other), "{}", **week) == []
    assert (await platform.client.delete(f"{API}/retention", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/retention", headers=h)).json()["default"] is True
    bad = await platform.client.put(f"{API}/retention", json={"days": 0}, headers=h)
    assert_field(bad, 422, "days")


async def test_stream_limit_keeps_labels_low_cardinality(platform: Platform, org: str) -> None:
    settings = LoggingSettings(max_streams_per_org=3)
    body = PushRequest.model_validate(
        {"streams": [stream({"app": "a", "user": f"u{i}"}, "x") for i in range(3)]}
    )
    async with transaction(platform.runtime.sessions) as session:
        assert (await service.push(session, org, body, settings)).streams == 3
    more = PushRequest.model_validate({"streams": [stream({"app": "a", "user": "u9"}, "x")]})
    with pytest.raises(Problem) as refused:
        async with transaction(platform.runtime.sessions) as session:
            await service.push(session, org, more, settings)
    assert refused.value.status == 429 and refused.value.errors == [
        {"field": "streams", "message": "stream limit exceeded"}
    ]
    # An existing label set still takes lines.
    again = PushRequest.model_validate({"streams": [stream({"app": "a", "user": "u1"}, "y")]})
    async with transaction(platform.runtime.sessions) as session:
        await service.push(session, org, again, settings)
    async with platform.runtime.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(Line).where(Line.org_id == org))
    assert count == 4
