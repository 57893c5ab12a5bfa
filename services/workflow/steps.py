"""What each kind of step does: an HTTP call to a target, a job on execution, a prompt through ai.
Every call carries an access token of the run's user, traded from the run's delegation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from coder.services.workflow.engine import Claimed, SaveState, StepError
from coder.services.workflow.identity import DelegationRefused, Delegations
from coder.shared.http import ServiceClients

# Answers a retry may cure; every other 4xx is the request's own fault, and fails the step at once.
RETRYABLE = frozenset({408, 409, 425, 429})
JOB_DONE = frozenset({"finished", "cancelled"})
MAX_TEXT = 64 * 1024


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:MAX_TEXT]


def _check(response: httpx.Response, what: str) -> Any:
    if response.is_success:
        return _answer(response)
    body = _answer(response)
    detail = body.get("detail") if isinstance(body, dict) else body
    message = f"{what} answered {response.status_code}: {detail}"
    retryable = response.status_code >= 500 or response.status_code in RETRYABLE
    raise StepError(message, retryable=retryable)


class StepRunner:
    """The engine's executor: runs one claimed step and returns its output (or raises StepError)."""

    def __init__(self, clients: ServiceClients, delegations: Delegations) -> None:
        self.clients = clients
        self.delegations = delegations

    async def _headers(self, step: Claimed) -> dict[str, str]:
        if step.delegation is None:
            raise StepError("the run has no delegation to act for its user with", retryable=False)
        try:
            token = await self.delegations.token(step.delegation)
        except DelegationRefused as exc:
            raise StepError(f"the gateway refused the run's delegation: {exc}", retryable=False) from None
        except httpx.HTTPError as exc:
            raise StepError(f"the gateway is unreachable: {exc!r}") from None
        return {"authorization": f"Bearer {token}", "idempotency-key": f"{step.run_id}:{step.name}"}

    async def _call(self, step: Claimed, target: str, method: str, path: str, body: Any = None) -> Any:
        headers = await self._headers(step)
        try:
            client = self.clients.client(target)
            kwargs: dict[str, Any] = {"headers": headers}
            if body is not None:
                kwargs["json"] = body
            response = await client.request(method, path, **kwargs)
        except KeyError:
            raise StepError(f"no target {target!r} on this platform", retryable=False) from None
        except httpx.HTTPError as exc:
            raise StepError(f"{target} is unreachable: {exc!r}") from None
        return _check(response, f"{target} {method} {path}")

    async def __call__(self, step: Claimed, save_state: SaveState) -> Any:
        given = step.input or {}
        if step.kind == "http":
            answer = await self._call(
                step, given["target"], given["method"], given["path"], given.get("body")
            )
            return {"body": answer}
        if step.kind == "ai":
            messages = [{"role": "system", "content": given["system"]}] if given.get("system") else []
            messages.append({"role": "user", "content": given["prompt"]})
            answer = await self._call(
                step, "ai", "POST", "/v1/chat/completions", {"model": given["model"], "messages": messages}
            )
            try:
                content = answer["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise StepError("ai answered without a message", retryable=False) from None
            return {"content": content, "model": answer.get("model"), "usage": answer.get("usage")}
        if step.kind == "execution":
            return await self._job(step, given, save_state)
        raise StepError(f"a {step.kind} step has nothing to run", retryable=False)

    async def _job(self, step: Claimed, given: dict[str, Any], save_state: SaveState) -> Any:
        job_id = step.state.get("job_id")
        if job_id is None:
            body: dict[str, Any] = {"command": given["command"]}
            for key in ("limits", "files"):
                if given.get(key) is not None:
                    body[key] = given[key]
            job = await self._call(step, "execution", "POST", "/v1/jobs", body)
            job_id = str(job["id"])
            # Kept with the step: an attempt resumed after a crash follows this job, not a new one.
            await save_state({"job_id": job_id})
        while True:
            job = await self._call(step, "execution", "GET", f"/v1/jobs/{job_id}")
            if job.get("status") in JOB_DONE:
                break
            await asyncio.sleep(float(given.get("poll_seconds", 1.0)))
        if job.get("status") == "finished" and job.get("exit_code") == 0:
            return job
        await save_state({})  # a retry submits a new job
        raise StepError(
            f"job {job_id} {job.get('status')}: {job.get('outcome')} (exit code {job.get('exit_code')}) "
            f"{job.get('reason') or ''}".strip()
        )
