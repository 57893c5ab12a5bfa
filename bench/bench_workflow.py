"""workflow's cost of durability, side by side in one run:

- per step: a chain of HTTP steps run by the engine (claim with FOR UPDATE SKIP LOCKED, an attempt row,
  the call, the result recorded under the fence, the next step made ready: four transactions) against
  the very same call made by the same step runner with no database at all;
- throughput: 100 runs started at once, 5 steps each, steps per second through the engine, against the
  same 500 calls made 100 at a time without durability.

The callee is a local HTTP server answering at once, so what is measured is workflow's own work.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coder.bench.support import Stopwatch, report, result, scratch_database
from coder.runner import registry
from coder.runner.process import build_process_app
from coder.services.workflow.engine import Claimed
from coder.services.workflow.identity import Delegations
from coder.services.workflow.models import Run
from coder.services.workflow.steps import StepRunner
from coder.shared import db, migrations
from coder.shared.settings import PlatformSettings
from coder.tests.support.platform import target_settings
from coder.tests.support.providers import serve, stop
from coder.tests.support.tokens import TestSigner

CHAIN = 40
RUNS = 100
STEPS_PER_RUN = 5
API = "/api/workflow/v1"
SECRET = "bench-" + uuid.uuid4().hex


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _steps(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"s{i}",
            "type": "http",
            "target": "sideeffects",
            "method": "POST",
            "path": "/v1/echo",
            "body": {"i": i},
            "needs": [f"s{i - 1}"] if i else [],
        }
        for i in range(count)
    ]


async def _wait_runs(app_runtime: Any, ids: list[str]) -> None:
    wanted = [uuid.UUID(i) for i in ids]
    while True:
        async with app_runtime.sessions() as session:
            left = await session.scalar(
                select(func.count()).select_from(Run).where(Run.id.in_(wanted), Run.status == "running")
            )
            failed = await session.scalar(
                select(func.count()).select_from(Run).where(Run.id.in_(wanted), Run.status != "completed")
            )
        if not left:
            assert not failed, f"{failed} runs did not complete"
            return
        await asyncio.sleep(0.02)


async def main() -> None:
    server, task, port = await serve(Starlette(routes=[Route("/v1/echo", _echo, methods=["POST"])]))
    signer = TestSigner()
    os.environ["WORKFLOW_POLL_SECONDS"] = "0.05"
    os.environ["WORKFLOW_CONCURRENCY"] = "100"
    try:
        async with scratch_database() as url:
            engine = db.create_engine(url, pool_size=2)
            targets = registry.resolve("gateway,workflow")
            await migrations.upgrade(engine, list(targets.values()))
            await engine.dispose()
            settings = PlatformSettings.model_validate(
                {
                    "database_url": url,
                    "jwks": signer.jwks(),
                    "environment": "test",
                    "service_urls": {"sideeffects": f"http://127.0.0.1:{port}"},
                    "workload_secrets": {"workflow": SECRET},
                    "log_level": "WARNING",
                }
            )
            app = build_process_app(settings, targets, target_settings(targets))
            async with app.router.lifespan_context(app):
                runtime = app.state.runtime
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                    h = signer.headers("bench-org", ("workflow:*", "sideeffects:*"), sub="bench")

                    async def define(name: str, count: int) -> str:
                        answer = await client.post(
                            f"{API}/definitions", json={"name": name, "steps": _steps(count)}, headers=h
                        )
                        assert answer.status_code == 201, answer.text
                        return str(answer.json()["id"])

                    async def start(definition: str) -> str:
                        answer = await client.post(f"{API}/definitions/{definition}/runs", json={}, headers=h)
                        assert answer.status_code == 201, answer.text
                        return str(answer.json()["id"])

                    chain = await define("chain", CHAIN)
                    wide = await define("wide", STEPS_PER_RUN)
                    # Warm up (the delegation trade is cached afterwards, for both sides alike).
                    warm = await start(chain)
                    await _wait_runs(runtime, [warm])
                    async with runtime.sessions() as session:
                        delegation = (await session.get(Run, uuid.UUID(warm))).delegation
                    runner = StepRunner(runtime.clients, Delegations(runtime.clients, SECRET))

                    def claimed(i: int) -> Claimed:
                        spec = _steps(1)[0]
                        given = {k: v for k, v in spec.items() if k not in ("name", "needs", "type")}
                        return Claimed(
                            run_id=uuid.uuid4(),
                            name=f"s{i}",
                            kind="http",
                            fence=1,
                            attempt=1,
                            org_id="bench-org",
                            actor="bench",
                            delegation=delegation,
                            spec=spec,
                            input=given,
                        )

                    async def no_state(state: dict[str, Any]) -> None:
                        return None

                    # 1. per step, one at a time
                    clock = Stopwatch()
                    for i in range(CHAIN):
                        await runner(claimed(i), no_state)
                    bare_step = clock.seconds / CHAIN
                    clock = Stopwatch()
                    run = await start(chain)
                    await _wait_runs(runtime, [run])
                    durable_step = clock.seconds / CHAIN

                    # 2. 100 concurrent runs
                    gate = asyncio.Semaphore(RUNS)

                    async def bare_call(i: int) -> None:
                        async with gate:
                            await runner(claimed(i), no_state)

                    clock = Stopwatch()
                    await asyncio.gather(*(bare_call(i) for i in range(RUNS * STEPS_PER_RUN)))
                    bare_rate = RUNS * STEPS_PER_RUN / clock.seconds
                    clock = Stopwatch()
                    runs = await asyncio.gather(*(start(wide) for _ in range(RUNS)))
                    await _wait_runs(runtime, list(runs))
                    durable_rate = RUNS * STEPS_PER_RUN / clock.seconds
    finally:
        await stop(server, task)

    report(
        f"workflow: one HTTP step, mean of a {CHAIN}-step chain",
        [
            ("the call alone (no durability)", bare_step * 1000, "ms/step"),
            ("durable step (engine, PostgreSQL)", durable_step * 1000, "ms/step"),
        ],
        baseline="the call alone (no durability)",
    )
    print(f"  durability overhead per step: {(durable_step - bare_step) * 1000:,.1f} ms")
    report(
        f"workflow: {RUNS} concurrent runs of {STEPS_PER_RUN} steps",
        [
            ("calls alone, 100 at a time", bare_rate, "steps/s"),
            ("durable runs (engine)", durable_rate, "steps/s"),
        ],
        baseline="calls alone, 100 at a time",
    )
    result("durable_vs_calls", durable_rate / bare_rate)


if __name__ == "__main__":
    asyncio.run(main())
