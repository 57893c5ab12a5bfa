"""Small builders for execution tests: a job run to its end, its output."""

from __future__ import annotations

from typing import Any

from coder.tests.support.platform import Platform, wait_until

API = "/api/execution/v1"
# Small limits: the machine is shared, and each limit is what a test drives a job into.
SMALL = {
    "cpu_seconds": 2,
    "wall_seconds": 20,
    "memory_bytes": 256 << 20,
    "processes": 32,
    "output_bytes": 65536,
}


async def submit(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"limits": SMALL, **fields}
    response = await p.client.post(f"{API}/jobs", json=body, headers=h)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def read(p: Platform, h: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/jobs/{job_id}", headers=h)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def ended(p: Platform, h: dict[str, str], job_id: str, timeout: float = 40.0) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        job = await read(p, h, job_id)
        return job if job["status"] in ("finished", "cancelled") else None

    job: dict[str, Any] = await wait_until(done, timeout=timeout, what=f"job {job_id} to end")
    return job


async def run(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    return await ended(p, h, (await submit(p, h, **fields))["id"])


async def output(p: Platform, h: dict[str, str], job_id: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/jobs/{job_id}/output", headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
