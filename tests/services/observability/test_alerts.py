"""Alert rules: pending until their `for` has passed, then firing, then inactive again; each change in
the history, firing and resolving as events through the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coder.services.observability.alerts import evaluate_all
from coder.shared.db import transaction
from coder.tests.services.observability.factories import API, FakeTarget, create_rule, create_slo, ok, poll
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


async def test_threshold_rule_pends_fires_and_resolves(
    platform: Platform, signer: TestSigner, org: str, fake_target: FakeTarget
) -> None:
    h = signer.headers(org)
    events = await listen(platform, "observability.alert.*")
    rule = await create_rule(
        platform,
        h,
        kind="threshold",
        target=fake_target.name,
        metric="up",
        comparison="<",
        threshold=1,
        for_seconds=60,
    )
    assert rule["state"] == "inactive"
    fake_target.ready = False
    await poll(platform, fake_target.name)
    read = ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h))
    assert (read["state"], read["last_value"]) == ("pending", 0.0)
    assert [a["id"] for a in ok(await platform.client.get(f"{API}/alerts", headers=h))] == [rule["id"]]

    # Still down a minute later: the rule fires.
    async with transaction(platform.runtime.sessions) as session:
        await evaluate_all(session, datetime.now(UTC) + timedelta(seconds=61))
    assert ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h))["state"] == "firing"

    fake_target.ready = True
    await poll(platform, fake_target.name)
    assert ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h))["state"] == "inactive"
    assert ok(await platform.client.get(f"{API}/alerts", headers=h)) == []

    history = ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}/history", headers=h))["items"]
    assert [(t["previous_state"], t["state"]) for t in history] == [
        ("firing", "inactive"),
        ("pending", "firing"),
        ("inactive", "pending"),
    ]
    mine = await wait_until(
        lambda: len([e for e in events if e.orgid == org]) == 2 and [e for e in events if e.orgid == org],
        what="the firing and resolved events",
    )
    assert [e.type for e in mine] == ["observability.alert.firing", "observability.alert.resolved"]
    assert mine[0].data["rule_id"] == rule["id"] and mine[0].data["value"] == 0.0
    assert mine[1].data["previous_state"] == "firing" and mine[1].data["value"] == 1.0


async def test_burn_rate_rule_needs_both_windows(
    platform: Platform, signer: TestSigner, org: str, fake_target: FakeTarget
) -> None:
    h = signer.headers(org)
    slo = await create_slo(platform, h, target=fake_target.name, objective=0.99)
    rule = await create_rule(platform, h, kind="burn_rate", slo_id=slo["id"], factor=14.4)
    assert (rule["long_window_seconds"], rule["short_window_seconds"]) == (3600, 300)
    await poll(platform, fake_target.name)
    fake_target.serve(200, 95)
    fake_target.serve(500, 5)  # 5% bad: burning at 5, under 14.4
    await poll(platform, fake_target.name)
    read = ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h))
    assert read["state"] == "inactive" and round(read["last_value"], 6) == 5

    fake_target.serve(500, 30)  # 35 of 130 bad over the hour: burning at ~26.9
    await poll(platform, fake_target.name)
    read = ok(await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h))
    assert read["state"] == "firing" and round(read["last_value"], 4) == round(35 / 130 / 0.01, 4)

    # Deleting the SLO deletes the rules on it.
    assert (await platform.client.delete(f"{API}/slos/{slo['id']}", headers=h)).status_code == 204
    assert (await platform.client.get(f"{API}/alert-rules/{rule['id']}", headers=h)).status_code == 404


async def test_rule_input_names_the_field(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    for fields, name in [
        ({"kind": "burn_rate", "factor": 2}, "slo_id"),
        ({"kind": "burn_rate", "slo_id": "00000000-0000-0000-0000-000000000001", "factor": 2}, "slo_id"),
        ({"kind": "threshold", "metric": "up", "comparison": "<", "threshold": 1}, "target"),
        (
            {"kind": "threshold", "target": "nowhere", "metric": "up", "comparison": "<", "threshold": 1},
            "target",
        ),
        (
            {"kind": "threshold", "target": "calendar", "metric": "cpu", "comparison": "<", "threshold": 1},
            "metric",
        ),
    ]:
        answer = await platform.client.post(f"{API}/alert-rules", json={"name": "r", **fields}, headers=h)
        assert answer.status_code == 422, (fields, answer.text)
        assert name in answer.text, (fields, answer.text)
