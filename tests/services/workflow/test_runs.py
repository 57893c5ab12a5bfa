"""Runs end to end: a DAG of HTTP steps acting for the user, retries, non-retryable errors, timeouts,
execution jobs, prompts through ai, cancellation, and the run events."""

from __future__ import annotations

import uuid

import jwt

from coder.tests.services.workflow.conftest import AiStandIn
from coder.tests.services.workflow.factories import (
    API,
    USER_PERMS,
    create_definition,
    history,
    http,
    read_run,
    start_run,
    steps_of,
    wait_run,
    wait_step,
)
from coder.tests.services.workflow.servers import Recorder
from coder.tests.support.platform import Platform, listen, wait_until
from coder.tests.support.tokens import TestSigner


async def _jwks(p: Platform) -> dict[str, jwt.PyJWK]:
    document = (await p.client.get("/.well-known/jwks.json")).json()
    return {k["kid"]: jwt.PyJWK.from_dict(k) for k in document["keys"]}


async def test_a_dag_runs_in_dependency_order_as_the_user_and_passes_outputs_on(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    user = f"user-{uuid.uuid4().hex[:6]}"
    h = signer.headers(org, USER_PERMS, sub=user)
    key = uuid.uuid4().hex[:8]
    events = await listen(wf, "workflow.run.*")
    steps = [
        http("fetch", f"/v1/echo/{key}/a", body={"city": "${input.city}"}),
        http("left", f"/v1/echo/{key}/b", "fetch", body={"from": "${steps.fetch.output.body.echo.city}"}),
        http("right", f"/v1/echo/{key}/c", "fetch"),
        http("join", f"/v1/echo/{key}/d", "left", "right", method="PUT"),
    ]
    definition = await create_definition(wf, h, steps, name=f"dag-{key}")
    run = await start_run(wf, h, definition["id"], city="Lyon")
    assert run["version"] == 1 and run["actor"] == user
    assert {s["name"]: s["status"] for s in run["steps"]} == {
        "fetch": "ready",
        "left": "pending",
        "right": "pending",
        "join": "pending",
    }
    done = await wait_run(wf, h, run["id"])
    assert done["status"] == "completed", done
    assert steps_of(done)["left"]["output"]["body"]["echo"] == {"from": "Lyon"}

    order = [r.path for r in recorder.requests if r.path.startswith(f"/v1/echo/{key}/")]
    assert (
        order[0].endswith("/a")
        and order[-1].endswith("/d")
        and sorted(order[1:3]) == [f"/v1/echo/{key}/b", f"/v1/echo/{key}/c"]
    )
    # Each call carries the run's user, in their org, with their permissions (no more), signed by the
    # gateway and naming workflow as the actor; and a key that stays the same across attempts.
    keys = await _jwks(wf)
    for seen in recorder.requests:
        if not seen.path.startswith(f"/v1/echo/{key}/"):
            continue
        token = seen.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(
            token,
            keys[jwt.get_unverified_header(token)["kid"]],
            algorithms=["EdDSA", "ES256"],
            audience="coder-platform",
        )
        assert (claims["sub"], claims["org"], claims["act"]) == (user, org, {"sub": "workflow"})
        assert set(claims["perms"]) == set(USER_PERMS)
        assert seen.headers["idempotency-key"].startswith(f"{run['id']}:")
    await wait_until(
        lambda: any(e.data["run_id"] == run["id"] for e in events if e.type == "workflow.run.completed")
    )
    assert any(e.type == "workflow.run.started" and e.data["run_id"] == run["id"] for e in events)


async def test_retries_back_off_and_a_4xx_fails_at_once(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    retry = {"max_attempts": 3, "backoff_seconds": 0.05}
    flaky = await create_definition(
        wf, h, [http("flaky", f"/v1/flaky/{key}/2", retry=retry)], name=f"f-{key}"
    )
    run = await wait_run(wf, h, (await start_run(wf, h, flaky["id"]))["id"])
    assert run["status"] == "completed" and steps_of(run)["flaky"]["attempts"] == 3
    attempts = await history(wf, h, run["id"])
    assert [a["status"] for a in attempts] == ["failed", "failed", "completed"]
    assert "503" in attempts[0]["error"] and attempts[0]["input"]["path"] == f"/v1/flaky/{key}/2"
    assert all(a["finished_at"] >= a["started_at"] for a in attempts)

    events = await listen(wf, "workflow.run.failed")
    refused = await create_definition(
        wf,
        h,
        [http("refused", "/v1/refuse", retry=retry), http("after", "/v1/echo/x", "refused")],
        name=f"r-{key}",
    )
    run = await wait_run(wf, h, (await start_run(wf, h, refused["id"]))["id"])
    assert run["status"] == "failed" and "403" in run["error"]
    assert steps_of(run)["refused"]["attempts"] == 1 and steps_of(run)["after"]["status"] == "skipped"
    await wait_until(
        lambda: any(e.data["run_id"] == run["id"] and e.data["step"] == "refused" for e in events)
    )


async def test_a_step_timeout_fails_the_attempt_and_the_retries(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    step = http("slow", f"/v1/hold/{key}", timeout_seconds=0.3, retry={"max_attempts": 1})
    definition = await create_definition(wf, h, [step], name=f"t-{key}")
    run = await wait_run(wf, h, (await start_run(wf, h, definition["id"]))["id"])
    recorder.release(key)
    assert run["status"] == "failed" and "timed out" in run["error"]


async def test_a_run_timeout_fails_the_run(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    steps = [{"name": "wait", "type": "approval"}]
    definition = await create_definition(wf, h, steps, name=f"rt-{key}", timeout_seconds=0.3)
    run = await wait_run(wf, h, (await start_run(wf, h, definition["id"]))["id"])
    assert run["status"] == "failed" and run["error"] == "the run timed out"
    assert steps_of(run)["wait"]["status"] == "skipped"


async def test_an_execution_job_is_followed_to_its_end(
    wf: Platform, signer: TestSigner, org: str, recorder: Recorder
) -> None:
    h = signer.headers(org, USER_PERMS)
    key = uuid.uuid4().hex[:8]
    steps = [
        {"name": "build", "type": "execution", "command": ["sh", "-c", "echo hi"], "poll_seconds": 0.05},
        {
            "name": "broken",
            "type": "execution",
            "command": ["sh", "-c", "exit 3"],
            "poll_seconds": 0.05,
            "needs": ["build"],
            "retry": {"max_attempts": 2, "backoff_seconds": 0},
        },
    ]
    definition = await create_definition(wf, h, steps, name=f"x-{key}")
    run = await wait_run(wf, h, (await start_run(wf, h, definition["id"]))["id"])
    assert steps_of(run)["build"]["output"]["exit_code"] == 0
    assert run["status"] == "failed" and "exit code 3" in run["error"]
    # The failing command ran twice (a retry submits a new job); the good one once.
    attempts = await history(wf, h, run["id"])
    assert [a["step"] for a in attempts] == ["build", "broken", "broken"]


async def test_a_prompt_goes_through_ai(
    wf: Platform, signer: TestSigner, org: str, ai_standin: AiStandIn
) -> None:
    h = signer.headers(org, USER_PERMS)
    steps = [
        {
            "name": "ask",
            "type": "ai",
            "model": "gpt-fake",
            "prompt": "Say hi to ${input.who}",
            "system": "Be brief",
        }
    ]
    definition = await create_definition(wf, h, steps, name=f"ai-{uuid.uuid4().hex[:6]}")
    run = await wait_run(wf, h, (await start_run(wf, h, definition["id"], who="Ada"))["id"])
    assert run["status"] == "completed", run
    output = steps_of(run)["ask"]["output"]
    assert output["content"] and output["usage"]["total_tokens"] > 0
    sent = ai_standin.provider.seen("/v1/chat/completions")[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hi to Ada"},
    ]


async def test_cancel_ends_a_run_and_its_waiting_steps(wf: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org, USER_PERMS)
    events = await listen(wf, "workflow.run.cancelled")
    steps = [{"name": "gate", "type": "approval"}, http("after", "/v1/echo/never", "gate")]
    definition = await create_definition(wf, h, steps, name=f"c-{uuid.uuid4().hex[:6]}")
    run = await start_run(wf, h, definition["id"])
    await wait_step(wf, h, run["id"], "gate", "waiting")
    response = await wf.client.post(f"{API}/runs/{run['id']}/cancel", headers=h)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert {s["status"] for s in response.json()["steps"]} == {"cancelled"}
    again = await wf.client.post(f"{API}/runs/{run['id']}/cancel", headers=h)
    assert again.status_code == 409
    await wait_until(lambda: any(e.data["run_id"] == run["id"] for e in events))
    assert (await read_run(wf, h, run["id"]))["status"] == "cancelled"
