"""execution's resources for the cross-org suite (tests/e2e/test_cross_org.py)."""

from __future__ import annotations

import asyncio

from coder.tests.support.crossorg import CrossOrg, TargetClient


async def create(client: TargetClient, headers: dict[str, str]) -> dict[str, str]:
    answer = await client.request("POST", "/v1/jobs", json={"command": ["echo", "mine"]}, headers=headers)
    assert answer.status_code == 201, answer.text
    job_id = str(answer.json()["id"])
    # Ended before the suite compares answers: a job's record changes while it runs.
    for _ in range(400):
        job = await client.request("GET", f"/v1/jobs/{job_id}", headers=headers)
        if job.json()["status"] in ("finished", "cancelled"):
            break
        await asyncio.sleep(0.05)
    return {"job_id": job_id}


registration = CrossOrg(
    create=create,
    unaddressed={("POST", "/v1/jobs"): "queues a job in the caller's org"},
)
