"""The input rules every target keeps: the `Input` base of request bodies, the text rules of query
strings and path parameters, and keyset cursors a client can forge."""

from __future__ import annotations

import base64
import json
import math
import typing
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from sqlalchemy import select

from coder.runner import registry
from coder.services.secrets.models import Secret, SecretVersion
from coder.services.usage.api import BATCH
from coder.services.usage.schemas import Dimension
from coder.shared.errors import Problem, field_errors
from coder.shared.pagination import page_params, paginate
from coder.shared.schemas import Input, _clean, _problems, json_body
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner
from coder.tests.support.workload import direct

PROBLEM = "application/problem+json"
SECRETS = "/api/secrets/v1"


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def test_every_request_body_of_every_target_is_an_input() -> None:
    bodies = [
        (name, route.path, model)
        for name, target in registry.resolve("all").items()
        # Included routers are resolved lazily; this walks them the way the app does.
        for route in (context.route for context in iter_route_contexts(target.router.routes))
        if isinstance(route, APIRoute)
        for param in route.dependant.body_params
        for model in _models(param.field_info.annotation)
    ]
    assert {name for name, _, _ in bodies} >= {"gateway", "secrets", "usage"}
    assert [b for b in bodies if not issubclass(b[2], Input)] == []


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


# JSON text that Python's json reads but that cannot be stored and read back as given.
BAD_VALUES = [
    ('"a\\u0000b"', "NUL"),
    ('"a\\ud800b"', "UTF-8"),
    ('"\\udfff"', "UTF-8"),
    ("NaN", "finite"),
    ("Infinity", "finite"),
    ("-Infinity", "finite"),
    ("1e400", "finite"),
    ("-1e400", "finite"),
    ("9223372036854775808", "64-bit"),
    ("-9223372036854775809", "64-bit"),
]


@pytest.mark.parametrize(("value", "why"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
async def test_free_form_values_are_refused_at_their_nested_key(
    platform: Platform, signer: TestSigner, org: str, value: str, why: str
) -> None:
    h = {**signer.headers(org), "content-type": "application/json"}
    body = '{"data": {"ok": "fine", "outer": {"list": [1, %s]}}}' % value  # noqa: UP031 - JSON braces
    response = await platform.client.put(f"{SECRETS}/secrets/input/nested", content=body, headers=h)
    problem = _problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["body.data.outer.list.1"], problem
    assert why in problem["errors"][0]["message"]
    assert (await platform.client.get(f"{SECRETS}/secrets/input/nested", headers=h)).status_code == 404


@pytest.mark.parametrize(("value", "why"), BAD_VALUES[:3], ids=[v for v, _ in BAD_VALUES[:3]])
async def test_a_bad_text_among_texts_is_named(
    platform: Platform, signer: TestSigner, org: str, value: str, why: str
) -> None:
    # A list of strings is checked joined; the one that breaks the rule is still the one named.
    h = {**signer.headers(org), "content-type": "application/json"}
    body = '{"data": {"list": ["ok", "fine", %s, "ok"]}}' % value  # noqa: UP031 - JSON braces
    response = await platform.client.put(f"{SECRETS}/secrets/input/texts", content=body, headers=h)
    problem = _problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["body.data.list.2"], problem
    assert why in problem["errors"][0]["message"]


@pytest.mark.parametrize("key", ['"a\\u0000"', '"\\ud800"'])
async def test_free_form_keys_are_refused(platform: Platform, signer: TestSigner, org: str, key: str) -> None:
    h = {**signer.headers(org), "content-type": "application/json"}
    body = '{"data": {"ok": 1, %s: 1}}' % key  # noqa: UP031 - JSON braces
    response = await platform.client.put(f"{SECRETS}/secrets/input/keys", content=body, headers=h)
    problem = _problem(response, 422)
    shown = json.loads(key).encode(errors="backslashreplace").decode()
    assert [e["field"] for e in problem["errors"]] == ["body.data." + shown], problem


async def test_typed_fields_and_extension_attributes_keep_the_rules(
    platform: Platform, signer: TestSigner, org: str, spender: dict[str, str]
) -> None:
    # A typed float (a Decimal amount) and a typed string, of a SERVICE action: sent as a target sends it.
    w = {**spender, "content-type": "application/json"}
    for body, field in [
        ('{"amount": NaN, "user_id": "u1"}', "body.amount"),
        ('{"amount": 1, "user_id": "u\\u0000"}', "body.user_id"),
    ]:
        problem = _problem(await direct(platform, "usage", "POST", "/v1/reservations", w, content=body), 422)
        assert field in [e["field"] for e in problem["errors"]], (body, problem)
    h = {**signer.headers(org), "content-type": "application/json"}
    cases = [
        # CloudEvents extension attributes (extra fields) and free-form event data.
        ("/api/usage/v1/events", '[{"id": "1", "source": "s", "type": "t", "ext": "\\ud800"}]', "body.0.ext"),
        (
            "/api/usage/v1/events",
            '[{"id": "1", "source": "s", "type": "t", "data": {"n": 1e400}}]',
            "body.0.data.n",
        ),
        # The names of extra fields are keys too (found by the fuzz suite: a 500 from PostgreSQL's jsonb).
        ("/api/usage/v1/events", '[{"id": "1", "source": "s", "type": "t", "x\\u0000": 1}]', "body.0.x\x00"),
        (
            "/api/usage/v1/events",
            '[{"id": "1", "source": "s", "type": "t", "data": {"k\\u0000": 1}}]',
            "body.0.data.k\x00",
        ),
    ]
    for path, body, field in cases:
        problem = _problem(await platform.client.post(path, content=body, headers=h), 422)
        assert field in [e["field"] for e in problem["errors"]], (path, body, problem)


# Raw query strings and paths: percent-escapes of NUL, of an encoded surrogate, of a byte that is not UTF-8.
BAD_PARAMETERS = [
    (f"{SECRETS}/audit?path=%00", "query.path"),
    (f"{SECRETS}/audit?path=%ED%A0%80", "query.path"),
    (f"{SECRETS}/audit?actor=ok&path=a%FFb", "query.path"),
    (f"{SECRETS}/metadata?prefix=a%00", "query.prefix"),
    (f"{SECRETS}/secrets/a%00b", "path.path"),
    (f"{SECRETS}/secrets/a%FFb", "path.path"),
    ("/api/usage/v1/budgets?scope_id=%00", "query.scope_id"),
    ("/api/usage/v1/meters/some/query?model=%C0%80", "query.model"),
    (f"/api/orgs/{uuid.uuid4()}/audit?action=%00", "query.action"),
    (f"/api/orgs/{uuid.uuid4()}/audit?resource_id=%ED%BF%BF", "query.resource_id"),
]


@pytest.mark.parametrize(("url", "field"), BAD_PARAMETERS, ids=[u for u, _ in BAD_PARAMETERS])
async def test_query_and_path_parameters_keep_the_text_rules(
    platform: Platform, signer: TestSigner, org: str, url: str, field: str
) -> None:
    response = await platform.client.get(url, headers=signer.headers(org))
    problem = _problem(response, 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem


# --- keyset cursors ---


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


NOW = "2024-05-01T10:00:00.123456+00:00"
ID = str(uuid.uuid4())
# Forged cursors for a page ordered by (created_at, secret_id, version): timestamptz, uuid, int4.
FORGED = {
    "not base64": "!!!!",
    "bad padding": "YWJj=",
    "not ascii": "é",
    "not JSON": base64.urlsafe_b64encode(b"not json").decode(),
    "not UTF-8": base64.urlsafe_b64encode(b'["\xff"]').decode(),
    "an object": _cursor({"a": 1}),
    "a string": _cursor("x"),
    "a number": _cursor(12),
    "empty": _cursor([]),
    "too short": _cursor([NOW, ID]),
    "too long": _cursor([NOW, ID, 1, 2]),
    "number for a time": _cursor([12, ID, 1]),
    "null for a time": _cursor([None, ID, 1]),
    "not a time": _cursor(["yesterday", ID, 1]),
    "a time without zone": _cursor(["2024-05-01T10:00:00", ID, 1]),
    "before year 1 in UTC": _cursor(["0001-01-01T00:00:00+01:00", ID, 1]),
    "after year 9999 in UTC": _cursor(["9999-12-31T23:59:59-01:00", ID, 1]),
    "not a uuid": _cursor([NOW, "not-a-uuid", 1]),
    "number for a uuid": _cursor([NOW, 12, 1]),
    "string for an int": _cursor([NOW, ID, "1"]),
    "float for an int": _cursor([NOW, ID, 1.5]),
    "bool for an int": _cursor([NOW, ID, True]),
    "list for an int": _cursor([NOW, ID, [1]]),
    "int4 overflow": _cursor([NOW, ID, 2**31]),
    "int4 underflow": _cursor([NOW, ID, -(2**31) - 1]),
    "huge int": _cursor([NOW, ID, 10**300]),
    "infinity": base64.urlsafe_b64encode(f'["{NOW}", "{ID}", 1e400]'.encode()).decode(),
    "NaN": base64.urlsafe_b64encode(f'["{NOW}", "{ID}", NaN]'.encode()).decode(),
}
# Forged cursors for a page ordered by (project, environment, path): three strings.
FORGED_TEXT = {
    "NUL in a string": _cursor(["a\x00", "", "p"]),
    "lone surrogate": base64.urlsafe_b64encode(b'["\\ud800", "", "p"]').decode(),
    "number for a string": _cursor([1, "", "p"]),
    "null for a string": _cursor([None, "", "p"]),
}


async def _seed(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    for path in ("a", "b/c", "d"):
        for project in ("", "ide"):
            for value in ("one", "two"):
                body = {"data": {"v": value}}
                params = {"project": project}
                response = await platform.client.put(
                    f"{SECRETS}/secrets/{path}", json=body, params=params, headers=h
                )
                assert response.status_code == 200, response.text


def _versions(org: str) -> Any:
    return select(SecretVersion).join(Secret).where(Secret.org_id == org)


VERSION_ORDER = (SecretVersion.created_at, SecretVersion.secret_id, SecretVersion.version)
TEXT_ORDER = (Secret.project, Secret.environment, Secret.path)


async def _page(platform: Platform, query: Any, order: Any, cursor: str | None, **options: Any) -> Any:
    params = page_params(limit=options.pop("limit", 2), cursor=cursor)
    async with platform.runtime.sessions() as session:
        return await paginate(session, query, order, params, **options)


@pytest.mark.parametrize("descending", [False, True])
async def test_a_cursor_walk_returns_every_row_once_in_order(
    platform: Platform, signer: TestSigner, org: str, descending: bool
) -> None:
    await _seed(platform, signer, org)
    for query, order in (
        (_versions(org), VERSION_ORDER),
        (select(Secret).where(Secret.org_id == org), TEXT_ORDER),
    ):
        everything = await _page(platform, query, order, None, limit=200, descending=descending)
        walked, cursor = [], None
        while True:
            rows = await _page(platform, query, order, cursor, descending=descending)
            walked += rows.items
            if not (cursor := rows.next_cursor):
                break
        assert len(everything.items) in (6, 12) and everything.next_cursor is None
        assert [_key(r, order) for r in walked] == [_key(r, order) for r in everything.items]


def _key(row: Any, order: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, c.key) for c in order)


@pytest.mark.parametrize(
    ("order", "cursor"),
    [*((VERSION_ORDER, c) for c in FORGED.values()), *((TEXT_ORDER, c) for c in FORGED_TEXT.values())],
    ids=[*FORGED, *FORGED_TEXT],
)
async def test_a_forged_cursor_is_a_400_naming_it(
    platform: Platform, signer: TestSigner, org: str, order: Any, cursor: str
) -> None:
    query = _versions(org) if order is VERSION_ORDER else select(Secret).where(Secret.org_id == org)
    with pytest.raises(Problem) as refused:
        await _page(platform, query, order, cursor)
    assert refused.value.status == 400
    assert refused.value.errors and refused.value.errors[0]["field"] == "query.cursor"


async def test_a_forged_cursor_through_the_api_is_a_400_problem(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    for url in (f"{SECRETS}/audit", f"{SECRETS}/metadata", "/api/usage/v1/meters", "/api/usage/v1/budgets"):
        for cursor in (FORGED["number for a time"], FORGED["not a uuid"], FORGED_TEXT["NUL in a string"]):
            problem = _problem(await platform.client.get(url, params={"cursor": cursor}, headers=h), 400)
            assert [e["field"] for e in problem["errors"]] == ["query.cursor"], (url, problem)


async def test_free_form_nesting_is_bounded_so_a_stored_value_reads_back(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = {**signer.headers(org), "content-type": "application/json"}
    url = f"{SECRETS}/secrets/input/deep"
    for depth in (100, 900):  # 900: inside json's own limit, far beyond anything decoded again safely
        body = '{"data": {"k": ' + "[" * depth + "]" * depth + "}}"
        problem = _problem(await platform.client.put(url, content=body, headers=h), 422)
        assert problem["errors"][0]["field"].startswith("body.data.k.0.0.0"), problem
        assert "nested deeper" in problem["errors"][0]["message"]
    assert (
        await platform.client.put(url, content='{"data": {"k": [[[["ok"]]]]}}', headers=h)
    ).status_code == 200
    assert (await platform.client.get(url, headers=h)).json()["data"] == {"k": [[[["ok"]]]]}


# --- a large body validated as it is parsed (`json_body`) ---

EVENT = '{"id": "1", "source": "s", "type": "t"'
JSON_BODIES = [
    # pydantic's parser refuses a lone surrogate escape outright; Python's json reads it, and it is named
    (f'[{EVENT}, "data": {{"k": "\\ud800"}}}}]', "body.0.data.k"),
    (f'[{EVENT}, "data": {{"k": NaN}}}}]', "body.0.data.k"),
    (f'[{EVENT}, "data": {{"k": 1}}}}, {EVENT}, "subject": 5}}]', "body.1.subject"),
    ("[]", "body"),
    ("{not json", "body.1"),
    ("", "body"),
]


@pytest.mark.parametrize(("body", "field"), JSON_BODIES)
def test_a_json_body_is_named_where_it_breaks_a_rule(body: str, field: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        json_body(BATCH, body.encode())
    assert field in [e["field"] for e in field_errors(caught.value)], caught.value.errors()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-32-be"])
def test_a_json_body_is_read_in_any_utf_encoding(encoding: str) -> None:
    sent = [{"id": "1", "source": "s", "type": "t", "time": "9999-12-31T00:00:00+01:00", "data": {"k": "é"}}]
    (event,) = json_body(BATCH, json.dumps(sent).encode(encoding))
    assert event.get("data") == {"k": "é"} and event.get("time") == datetime(9999, 12, 30, 23, tzinfo=UTC)


# --- the quick check before the close look ---

CLEAN = [
    {"a": "text", "b": [1, 2.5, None, True, {"c": "é"}], "d": datetime(2024, 1, 1, tzinfo=UTC)},
    {"deep": [[[["ok"]]]]},
    {"enum": Dimension.MODEL, "decimal": Decimal("1.5"), "tuple": ("a", 1), "uuid": uuid.uuid4()},
    {1: "a key that is not a string"},
    {"edge": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=1)))},
]
DIRTY = [
    {"a": "x\x00"},
    {"a\x00": 1},
    {"a": ["\ud800"]},
    {"\udfff": 1},
    {"a": {"b": math.nan}},
    {"a": [math.inf]},
    {"a": 2**63},
    {"a": -(2**63) - 1},
    {"a": Decimal("NaN")},
    {"a": ("x\x00",)},
    {"a": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))},
    {"a": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-1)))},
    {"a": json.loads("[" * 70 + "]" * 70)},
]


@pytest.mark.parametrize("value", CLEAN + DIRTY)
def test_the_quick_check_never_passes_what_the_close_look_refuses(value: dict[Any, Any]) -> None:
    problems = list(_problems(value, ()))
    assert bool(problems) == (value in DIRTY)
    if problems:
        assert not _clean(value)
    elif all(isinstance(k, str) for k in value):
        assert _clean(value)  # the common case stays on the quick path
