"""Platform health and SLOs from the poller's scrapes, checked against what the targets' own /metrics
say: after N requests to a target, the counts observability reports are the deltas of its counters."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from coder.tests.services.observability.factories import API, FakeTarget, create_slo, ok, poll
from coder.tests.support.platform import Platform
from coder.tests.support.tokens import TestSigner


@dataclass(frozen=True)
class Counters:
    """A target's request counters as its /metrics exposes them, read here independently."""

    total: float
    errors: float
    under_250ms: float
    latency_count: float


async def counters(p: Platform, target: str) -> Counters:
    text = (await p.runtime.metrics.client(target).get("/metrics")).text
    total = errors = under = count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("target") != target:
                continue
            if s.name == "http_requests_total":
                total += s.value
                errors += s.value if s.labels["status"].startswith("5") else 0
            elif s.name == "http_request_duration_seconds_bucket" and float(s.labels["le"]) == 0.25:
                under += s.value
            elif s.name == "http_request_duration_seconds_count":
                count += s.value
    return Counters(total, errors, under, count)


async def test_slo_counts_equal_the_deltas_of_the_targets_metrics(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    availability = await create_slo(platform, h, target="calendar", objective=0.999)
    latency = await create_slo(platform, h, target="calendar", kind="latency", threshold_seconds=0.25)

    before = await counters(platform, "calendar")
    (first,) = await poll(platform, "calendar")
    # 7 answered 200, 3 answered 404, 2 answered 422: 12 requests, none a 5xx.
    for _ in range(7):
        ok(await platform.client.get("/api/calendar/v1/calendars", headers=h))
    for _ in range(3):
        missing = await platform.client.get(f"/api/calendar/v1/calendars/{uuid.uuid4()}", headers=h)
        assert missing.status_code == 404
    for _ in range(2):
        refused = await platform.client.get("/api/calendar/v1/calendars?limit=0", headers=h)
        assert refused.status_code == 422
    (last,) = await poll(platform, "calendar")
    after = await counters(platform, "calendar")
    assert first.up and last.up

    span = {"from": first.at.isoformat(), "to": last.at.isoformat()}
    a = ok(await platform.client.get(f"{API}/slos/{availability['id']}", params=span, headers=h))["status"]
    lat = ok(await platform.client.get(f"{API}/slos/{latency['id']}", params=span, headers=h))["status"]
    print(
        f"calendar /metrics deltas: {after.total - before.total} requests, {after.errors - before.errors} 5xx, "
        f"{after.under_250ms - before.under_250ms} within 0.25 s; observability: {a['total']} requests, "
        f"{a['errors_5xx']} 5xx, {lat['good']} within 0.25 s"
    )
    assert after.total - before.total == 12
    assert a["total"] == after.total - before.total
    assert a["errors_5xx"] == after.errors - before.errors == 0
    assert a["good"] == a["total"] and a["sli"] == 1.0 and a["error_budget_remaining"] == 1.0
    assert lat["total"] == after.latency_count - before.latency_count == 12
    assert lat["good"] == after.under_250ms - before.under_250ms
    assert lat["bad"] == lat["total"] - lat["good"]

    health = ok(await platform.client.get(f"{API}/health", headers=h))
    (calendar,) = [t for t in health["targets"] if t["target"] == "calendar"]
    assert calendar["up"] is True and calendar["ready_status"] == 200
    assert calendar["requests_total"] == after.total  # read at the last poll; nothing reached it since
    listed = ok(await platform.client.get(f"{API}/slos", headers=h))["items"]
    assert [s["id"] for s in listed] == [availability["id"], latency["id"]]


async def test_error_budget_burn_and_counter_resets(
    platform: Platform, signer: TestSigner, org: str, fake_target: FakeTarget
) -> None:
    h = signer.headers(org)
    slo = await create_slo(platform, h, target=fake_target.name, objective=0.99)
    fake_target.serve(200, 40)
    await poll(platform, fake_target.name)  # the baseline: what came before is not in the window
    fake_target.serve(200, 80)
    fake_target.serve(503, 20)
    await poll(platform, fake_target.name)
    status = ok(await platform.client.get(f"{API}/slos/{slo['id']}", headers=h))["status"]
    assert (status["total"], status["good"], status["errors_5xx"]) == (100, 80, 20)
    assert status["sli"] == 0.8
    # 20% bad against a 1% budget: spent 20 times over, burning at 20 in every window.
    assert round(status["error_budget_remaining"], 6) == -19
    assert {k: round(v, 6) for k, v in status["burn_rates"].items()} == dict.fromkeys(
        ["5m", "30m", "1h", "6h"], 20
    )

    fake_target.restart()  # the target restarted: its counters start again
    fake_target.serve(200, 10)
    await poll(platform, fake_target.name)
    status = ok(await platform.client.get(f"{API}/slos/{slo['id']}", headers=h))["status"]
    assert (status["total"], status["good"], status["scrapes"]) == (110, 90, 3)


async def test_health_names_a_target_that_is_not_ready(
    platform: Platform, signer: TestSigner, org: str, fake_target: FakeTarget
) -> None:
    h = signer.headers(org)
    fake_target.ready = False
    await poll(platform, fake_target.name)
    health = ok(await platform.client.get(f"{API}/health", headers=h))
    (fake,) = [t for t in health["targets"] if t["target"] == fake_target.name]
    assert fake["up"] is False and fake["ready_status"] == 503 and "503" in fake["error"]
    assert health["status"] == "degraded"


async def test_platform_data_needs_the_platform_permission(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    reader = signer.headers(org, perms=["observability:read", "observability:ingest"])
    for path in ("/health", "/slos", "/alerts", "/alert-rules"):
        assert (await platform.client.get(API + path, headers=reader)).status_code == 403, path
    assert (await platform.client.get(f"{API}/service-map", headers=reader)).status_code == 200


async def test_slo_input_names_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    base = {"name": "x", "target": "calendar", "kind": "availability", "objective": 0.99}
    cases: list[tuple[dict[str, object], str]] = [
        ({"target": "nowhere"}, "target"),
        ({"objective": 1}, "objective"),
        ({"kind": "latency"}, "threshold_seconds"),
        ({"kind": "latency", "threshold_seconds": 0.3}, "threshold_seconds"),
        ({"threshold_seconds": 0.25}, "threshold_seconds"),
        ({"window_seconds": 60}, "window_seconds"),
    ]
    for fields, name in cases:
        answer = await platform.client.post(f"{API}/slos", json={**base, **fields}, headers=h)
        assert answer.status_code == 422, (fields, answer.text)
        assert name in answer.text, (fields, answer.text)
    await create_slo(platform, h, name="dup")
    assert (
        await platform.client.post(f"{API}/slos", json={**base, "name": "dup"}, headers=h)
    ).status_code == 409
