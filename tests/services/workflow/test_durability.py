"""Durability: a process killed with SIGKILL mid-run resumes on restart without losing a step or
repeating a completed one; workers sharing a database never run a step twice; a worker whose lease
lapsed cannot record a result over the worker that took the step over."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text, update

from coder.runner import registry
from coder.services.workflow.engine import Engine
from coder.services.workflow.identity import Delegations
from coder.services.workflow.models import Step
from coder.services.workflow.steps import StepRunner
from coder.shared import db, migrations
from coder.shared.devservers import free_port
from coder.tests.services.workflow.factories import (
    USER_PERMS,
    create_definition,
    history,
    http,
    start_run,
    steps_of,
    wait_run,
)
from coder.tests.services.workflow.servers import Recorder
from coder.tests.support.databases import drop_database
from coder.tests.support.logscan import LogCapture
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner

API = "/api/workflow/v1"


async def gateway_and_workflow_database(server_url: str) -> str:
    """A database of its own with only the gateway's and workflow's tables (quicker than every target's)."""
    name = f"coder_wfkill_{uuid.uuid4().hex[:8]}"
    admin = db.create_engine(db.make_url_for_database(server_url, "postgres"), pool_size=1)
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    url = db.make_url_for_database(server_url, name)
    engine = db.create_engine(url, pool_size=1)
    try:
        await migrations.upgrade(engine, list(registry.resolve("gateway,workflow").values()))
    finally:
        await engine.dispose()
    return url


@contextmanager
def workflow_process(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`coder-platform run --target gateway,workflow` on `port`, once `/healthz` answers."""
    cli = str(Path(sys.executable).with_name("coder-platform"))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [cli, "run", "--target", "gateway,workflow", "--port", str(port), "--metrics-port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)


async def test_a_process_killed_mid_step_resumes_without_losing_or_repeating_a_step(
    database_url: str, signer: TestSigner, recorder: Recorder, tmp_path: Path, log_capture: LogCapture
) -> None:
    # A database of its own: no other worker of this test session may pick the run up.
    url = await gateway_and_workflow_database(database_url)
    org = f"org-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CODER_JWKS": signer.jwks(),
        "CODER_SERVICE_URLS": json.dumps({"sideeffects": recorder.url}),
        "WORKFLOW_WORKLOAD_SECRET": "kill-test-" + uuid.uuid4().hex,
        "WORKFLOW_LEASE_SECONDS": "5",
        "WORKFLOW_POLL_SECONDS": "0.1",
    }
    for name in ("REDIS_URL", "AMQP_URL"):
        env.pop(name, None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "workflow.log"
    h = signer.headers(org, USER_PERMS, sub="killer")
    steps = [
        http("first", f"/v1/echo/{key}/first"),
        http("second", f"/v1/hold/{key}", "first"),
        http("third", f"/v1/echo/{key}/third", "second"),
    ]
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            with workflow_process(env, port, log) as process:
                created = await client.post(
                    f"{API}/definitions", json={"name": "kill", "steps": steps}, headers=h
                )
                assert created.status_code == 201, created.text
                run = await client.post(f"{API}/definitions/{created.json()['id']}/runs", json={}, headers=h)
                assert run.status_code == 201, run.text
                run_id = run.json()["id"]
                # `second` is in flight (its request held by the server): kill the process now.
                await wait_until(lambda: recorder.hold_seen(key), what="the second step's call")
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
            recorder.release(key)  # the dead process's request ends; nobody reads the answer

            with workflow_process(env, port, log):

                async def finished() -> dict[str, object] | None:
                    answer = (await client.get(f"{API}/runs/{run_id}", headers=h)).json()
                    return answer if answer["status"] != "running" else None

                done = await wait_until(finished, what="the resumed run to end")
                attempts = (await client.get(f"{API}/runs/{run_id}/history", headers=h)).json()["attempts"]
    finally:
        log_capture.add_text(log.read_text())
        await drop_database(url)

    assert done["status"] == "completed", done
    by_step: dict[str, list[str]] = {}
    for attempt in attempts:
        by_step.setdefault(attempt["step"], []).append(attempt["status"])
    # Each completed step exactly once: `first` completed before the kill and never ran again; the
    # step in flight was abandoned with its worker and completed once by the restarted process.
    assert by_step == {"first": ["completed"], "second": ["abandoned", "completed"], "third": ["completed"]}
    assert "lapsed" in next(a for a in attempts if a["status"] == "abandoned")["error"]
    assert recorder.count(f"/v1/echo/{key}/first") == 1
    assert recorder.count(f"/v1/echo/{key}/third") == 1
    # The in-flight call was made again, with the same idempotency key for the callee to deduplicate.
    held = recorder.seen(f"/v1/hold/{key}")
    assert len(held) == 2 and len({r.headers["idempotency-key"] for r in held}) == 1


async def test_workers_on_one_database_never_run_a_step_twice(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    steps = [
        http("a", f"/v1/echo/{key}/a"),
        http("b", f"/v1/echo/{key}/b", "a"),
        http("c", f"/v1/echo/{key}/c", "a"),
    ]
    definition = await create_definition(wf, h, steps, name=f"many-{key}")
    # Two more workers beside the platform's own, on the same database.
    runner = StepRunner(
        wf.runtime.clients, Delegations(wf.runtime.clients, wf.runtime.settings.workload_secrets["workflow"])
    )
    engines = [Engine(wf.runtime.sessions, runner, poll_seconds=0.02, worker=f"extra-{i}") for i in range(2)]
    tasks = [asyncio.create_task(e.run()) for e in engines]
    try:
        runs = await asyncio.gather(*(start_run(wf, h, definition["id"]) for _ in range(8)))
        for run in runs:
            assert (await wait_run(wf, h, run["id"]))["status"] == "completed"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    workers: Counter[str] = Counter()
    for run in runs:
        attempts = await history(wf, h, run["id"])
        assert sorted((a["step"], a["status"]) for a in attempts) == [
            ("a", "completed"),
            ("b", "completed"),
            ("c", "completed"),
        ]
        workers.update(a["worker"] for a in attempts)
    keys = Counter(
        r.headers["idempotency-key"] for r in recorder.requests if r.path.startswith(f"/v1/echo/{key}/")
    )
    assert len(keys) == 24 and set(keys.values()) == {1}
    assert sum(workers.values()) == 24


async def test_a_worker_whose_lease_lapsed_records_nothing(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    definition = await create_definition(wf, h, [http("slow", f"/v1/hold/{key}")], name=f"lease-{key}")
    run = await start_run(wf, h, definition["id"])
    await wait_until(lambda: recorder.hold_seen(key), what="the first attempt's call")
    # The first worker hangs past its lease: another claims the step (the fence moves) and runs it.
    async with wf.runtime.sessions.begin() as session:
        await session.execute(
            update(Step)
            .where(Step.run_id == uuid.UUID(run["id"]), Step.name == "slow")
            .values(due_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    done = await wait_run(wf, h, run["id"])
    recorder.release(key)  # the first worker's call answers at last: too late to count
    assert done["status"] == "completed" and steps_of(done)["slow"]["output"]["body"]["n"] == 2
    attempts = await history(wf, h, run["id"])
    assert [a["status"] for a in attempts] == ["abandoned", "completed"]

    async def settled() -> bool:
        return recorder.count(f"/v1/hold/{key}") == 2

    await wait_until(settled)
    assert [a["status"] for a in await history(wf, h, run["id"])] == ["abandoned", "completed"]
