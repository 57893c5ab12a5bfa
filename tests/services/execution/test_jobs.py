"""Jobs through the gateway path `/api/execution`, on both backends: code with files in and out, the
event, output while running and streamed, cancel, quota in resources, the queue, and bad input."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, update

from coder.services.execution import service
from coder.services.execution.models import Job
from coder.services.execution.worker import Executor, executor
from coder.tests.services.execution.factories import API, SMALL, ended, output, read, run, submit
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner

RESOURCES = "/api/resources/v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def paused(platform: Platform) -> Iterator[Executor]:
    """The process's workers taking no job until the test lets them."""
    workers = executor(platform.runtime)
    workers.accepting = False
    yield workers
    workers.accepting = True
    workers.wake.set()


async def test_code_with_files_stdin_and_the_event(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, sub="alice")
    events = await listen(platform, "execution.job.finished")
    # A limit, through the API (each one is driven in test_sandbox.py).
    loop = await submit(
        platform, h, command=["python3", "-c", "while True: pass"], limits={**SMALL, "cpu_seconds": 1}
    )
    source = (
        "import sys\n"
        "name = sys.stdin.read().strip()\n"
        "data = open('in/data.txt').read()\n"
        "open('out/result.txt', 'w').write(f'{data} {name}')\n"
        "print('hello', name)\n"
        "print('warned', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    job = await run(
        platform,
        h,
        language="python",
        source=source,
        stdin="bob",
        files={"in/data.txt": b64(b"hi"), "out/.keep": b64(b"")},
        outputs=["out/result.txt", "out/none.txt"],
        reference="plan-1/task-2",
    )
    assert job["status"] == "finished" and job["outcome"] == "exited", job
    assert job["exit_code"] == 3 and job["reason"] == "exited with 3"
    assert job["sandbox"] in ("bubblewrap", "rlimits")
    assert job["files"] == {"out/result.txt": b64(b"hi bob")} and job["missing_outputs"] == ["out/none.txt"]
    assert job["stdout_bytes"] == len("hello bob\n") and job["created_by"] == "alice"
    assert await output(platform, h, job["id"]) == {
        "status": "finished",
        "stdout": "hello bob\n",
        "stderr": "warned\n",
    }

    event = await wait_until(
        lambda: next((e for e in events if e.subject == job["id"]), None), what="the event"
    )
    assert event.data["outcome"] == "exited" and event.data["exit_code"] == 3
    assert event.data["reference"] == "plan-1/task-2" and event.data["user_id"] == "alice"

    # The stream of an ended job: its output, then the job.
    stream = await platform.client.get(f"{API}/jobs/{job['id']}/stream", headers=h)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in stream.text.split("\n\n") if b]
    kinds = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"stdout", "stderr"}
    assert json.loads(blocks[-1].split("data: ", 1)[1])["id"] == job["id"]

    loop = await ended(platform, h, loop["id"])
    assert (loop["outcome"], loop["reason"], loop["exit_code"]) == (
        "cpu_time",
        "used its 1 s of CPU time",
        None,
    )


async def test_output_while_running_then_cancel(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    job = await submit(platform, h, command=["sh", "-c", "echo first; sleep 600"])

    async def printed() -> bool:
        out = await output(platform, h, job["id"])
        return out["status"] == "running" and out["stdout"] == "first\n"

    await wait_until(printed, what="output while the job runs")
    cancelled = await platform.client.post(f"{API}/jobs/{job['id']}/cancel", headers=h)
    assert cancelled.status_code == 200
    done = await ended(platform, h, job["id"])
    assert (done["status"], done["outcome"]) == ("cancelled", "cancelled")
    # Cancelling an ended job changes nothing.
    again = await platform.client.post(f"{API}/jobs/{job['id']}/cancel", headers=h)
    assert again.json()["finished_at"] == done["finished_at"]


async def test_quota_in_resources(platform: Platform, signer: TestSigner, org: str, paused: Executor) -> None:
    h = signer.headers(org, sub="carol")
    quota = await platform.client.post(
        f"{RESOURCES}/quotas",
        json={"scope": "user", "scope_id": "carol", "hard": {"sandboxes": 1}},
        headers=h,
    )
    assert quota.status_code == 201, quota.text
    first = await submit(platform, h, command=["true"])
    assert first["reservation_id"] is not None

    refused = await platform.client.post(f"{API}/jobs", json={"command": ["true"]}, headers=h)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["quota"]["resource"] == "sandboxes"
    assert (problem["quota"]["requested"], problem["quota"]["used"], problem["quota"]["limit"]) == (1, 1, 1)
    # Nothing was stored for the refused job.
    listed = (await platform.client.get(f"{API}/jobs", headers=h)).json()["items"]
    assert [j["id"] for j in listed] == [first["id"]]

    # Run to its end, the reservation is released: the next job fits.
    paused.accepting = True
    paused.wake.set()
    assert (await ended(platform, h, first["id"]))["outcome"] == "exited"

    async def released() -> bool:
        answer = await platform.client.get(f"{RESOURCES}/reservations/{first['reservation_id']}", headers=h)
        return bool(answer.json()["status"] == "released")

    await wait_until(released, what="the reservation to be released")
    assert (await run(platform, h, command=["true"]))["outcome"] == "exited"


async def test_the_queue(platform: Platform, signer: TestSigner, org: str, paused: Executor) -> None:
    h = signer.headers(org)
    jobs = [await submit(platform, h, command=["echo", str(i)]) for i in range(2)]
    queued = await submit(platform, h, command=["true"])
    cancelled = await platform.client.post(f"{API}/jobs/{queued['id']}/cancel", headers=h)
    assert (cancelled.json()["status"], cancelled.json()["outcome"]) == ("cancelled", "cancelled")

    # Two replicas claiming at once never take the same job; a claim rolled back (a replica dying
    # before it commits) leaves the job queued.
    sessions = platform.runtime.sessions
    async with sessions() as one, sessions() as two:
        a = await service.claim(one, "replica-a", "test")
        b = await service.claim(two, "replica-b", "test")
        assert a is not None and b is not None and a.id != b.id
        assert {str(a.id), str(b.id)} == {j["id"] for j in jobs}
        await one.rollback()
        await two.rollback()
    assert [(await read(platform, h, j["id"]))["status"] for j in jobs] == ["queued", "queued"]

    paused.accepting = True
    paused.wake.set()
    done = [await ended(platform, h, j["id"]) for j in jobs]
    assert [d["outcome"] for d in done] == ["exited", "exited"]
    assert [(await output(platform, h, j["id"]))["stdout"] for j in jobs] == ["0\n", "1\n"]


async def test_a_job_whose_worker_died_is_ended_as_lost(
    platform: Platform, signer: TestSigner, org: str, paused: Executor
) -> None:
    h = signer.headers(org)
    job = await submit(platform, h, command=["true"])
    # Claimed by a replica that then died: running, its last heartbeat long ago.
    async with platform.runtime.sessions() as session, session.begin():
        await session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(
                status="running",
                worker="dead-replica",
                started_at=func.now() - timedelta(hours=1),
                heartbeat_at=func.now() - timedelta(seconds=paused.settings.lost_after_seconds + 60),
            )
        )
    # No wake: the idle workers' timed look ends it, and never runs it again.
    paused.accepting = True
    done = await ended(platform, h, job["id"])
    assert (done["status"], done["outcome"]) == ("finished", "error")
    assert done["reason"] == "its worker (dead-replica) stopped while it ran"
    assert (await output(platform, h, job["id"]))["stdout"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": ["true"], "language": "python", "source": "x"}, "body"),
        ({"language": "python"}, "body"),
        ({"command": []}, "body.command"),
        ({"command": ["true"], "files": {"../escape": b64(b"x")}}, "body.files"),
        ({"command": ["true"], "files": {"a": "not base64!"}}, "body.files"),
        ({"command": ["true"], "outputs": ["/etc/passwd"]}, "body.outputs"),
        ({"command": ["true"], "limits": {"memory_bytes": 1}}, "body.limits.memory_bytes"),
        ({"command": ["true"], "language": "cobol", "source": "x"}, "body.language"),
    ],
)
async def test_bad_input_names_the_field(
    platform: Platform, signer: TestSigner, org: str, body: dict[str, Any], field: str
) -> None:
    response = await platform.client.post(f"{API}/jobs", json=body, headers=signer.headers(org))
    assert response.status_code == 422, response.text
    assert any(e["field"].startswith(field) for e in response.json()["errors"]), response.json()
