"""The durable engine: workers claim ready steps from PostgreSQL, run them, and record each result.

Every state change is a transaction. A worker claims a step with `FOR UPDATE SKIP LOCKED`, bumps its
`fence` and takes a lease (`due_at`), which it renews while the step runs; it records the result only
if the fence is still the one it took (`record`). So:
- two workers never run the same step: the row lock hands a ready step to one, and a step whose lease
  is alive is not ready;
- a worker that died (SIGKILL) or hung loses its lease when it lapses; another worker (or the same
  process restarted) claims the step again, its earlier attempt marked abandoned;
- a completed step is never run again: it is never ready again, and a late answer from a worker whose
  lease was taken over finds another fence and is dropped.
A step in flight when its process died runs again (at least once, as in Temporal and Argo); HTTP
steps carry an `Idempotency-Key` naming the run and step, the same on every attempt, for the callee
to deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.workflow.models import Attempt, Base, Definition, Run, Step, Version
from coder.services.workflow.service import (
    DEFAULT_WAIT_SECONDS,
    STEP_DONE,
    definition_name,
    next_fire,
    now,
    start_run,
)

log = logging.getLogger(__name__)

WAITING_KINDS = frozenset({"event", "approval"})
TEMPLATE = re.compile(r"\$\{([a-z_]+(?:\.[A-Za-z0-9_-]+)*)\}")


class StepError(Exception):
    """A failed attempt; `retryable` False fails the step at once (a 4xx answer, a refused input)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Claimed:
    """A step a worker holds the lease of, with what it needs to run."""

    run_id: uuid.UUID
    name: str
    kind: str
    fence: int
    attempt: int
    org_id: str
    actor: str
    delegation: str | None
    spec: dict[str, Any]
    input: Any
    state: dict[str, Any] = field(default_factory=dict)


SaveState = Callable[[dict[str, Any]], Awaitable[None]]


class Executor(Protocol):
    async def __call__(self, step: Claimed, save_state: SaveState) -> Any: ...


class LeaseLost(Exception):
    """Another worker took the step over, or the run was cancelled: nothing may be recorded."""


# --- templates: a step's input from the run's input and its dependencies' outputs ---


def _lookup(path: str, scope: dict[str, Any]) -> Any:
    value: Any = scope
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise StepError(f"${{{path}}} names nothing", retryable=False)
    return value


def resolve(value: Any, scope: dict[str, Any]) -> Any:
    """`${input.x}` / `${steps.<name>.output.x}`: a whole string is replaced by the value, a string
    containing one by its text."""
    if isinstance(value, str):
        whole = TEMPLATE.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), scope)
        return TEMPLATE.sub(lambda m: str(_lookup(m.group(1), scope)), value)
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, scope) for k, v in value.items()}
    return value


def step_spec(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in spec["steps"] if s["name"] == name)


def backoff(retry: dict[str, Any], attempt: int) -> float:
    delay = float(retry.get("backoff_seconds", 1.0)) * (2 ** max(attempt - 1, 0))
    return min(delay, float(retry.get("max_backoff_seconds", 300.0)))


# --- recording results ---


async def _spec_of(session: AsyncSession, run: Run) -> dict[str, Any]:
    version = await session.get(Version, (run.definition_id, run.version))
    assert version is not None
    return version.spec


async def _finish_run(
    session: AsyncSession, run: Run, status: str, error: str | None, step: str | None
) -> None:
    stamp = now()
    await session.execute(
        update(Step)
        .where(Step.run_id == run.id, Step.status.not_in(STEP_DONE))
        .values(status="skipped", fence=Step.fence + 1, finished_at=stamp, worker=None)
    )
    run.status, run.error, run.finished_at = status, error, stamp
    payload = {
        "run_id": str(run.id),
        "definition_id": str(run.definition_id),
        "definition_name": await definition_name(session, run),
        "version": run.version,
        "trigger": run.trigger,
        "actor": run.actor,
    }
    if status == "completed":
        await Base.events.publish(
            session, "workflow.run.completed", payload, org_id=run.org_id, subject=str(run.id)
        )
    else:
        payload.update(error=error or status, step=step)
        await Base.events.publish(
            session, "workflow.run.failed", payload, org_id=run.org_id, subject=str(run.id)
        )


async def _advance(session: AsyncSession, run: Run) -> None:
    """Steps whose dependencies all completed become ready; a run whose steps all did completes."""
    steps = list((await session.execute(select(Step).where(Step.run_id == run.id))).scalars())
    completed = {s.name for s in steps if s.status == "completed"}
    stamp = now()
    for s in steps:
        if s.status == "pending" and set(s.needs) <= completed:
            s.status, s.due_at = "ready", stamp
    if len(completed) == len(steps):
        await _finish_run(session, run, "completed", None, None)
    await session.flush()


async def record(
    session: AsyncSession,
    step: Step,
    *,
    fence: int,
    ok: bool,
    output: Any,
    error: str | None,
    retryable: bool,
) -> bool:
    """Record an attempt's result, if `fence` still holds the step; False (nothing written) if not.
    The caller has locked the step row; the run row is locked here, run before step everywhere."""
    run = await session.get(Run, step.run_id, with_for_update=True)
    await session.refresh(step, with_for_update=True)
    if (
        run is None
        or run.status != "running"
        or step.fence != fence
        or step.status not in ("running", "waiting")
    ):
        return False
    stamp = now()
    attempt = await session.scalar(
        select(Attempt).where(
            Attempt.run_id == step.run_id, Attempt.step == step.name, Attempt.number == step.attempts
        )
    )
    if attempt is not None:
        attempt.status = "completed" if ok else "failed"
        attempt.output, attempt.error, attempt.finished_at = output, error, stamp
    step.worker = None
    if ok:
        step.status, step.output, step.error, step.finished_at = "completed", output, None, stamp
        await session.flush()
        await _advance(session, run)
        return True
    retry = step_spec(await _spec_of(session, run), step.name).get("retry", {})
    step.error = error
    if retryable and step.attempts < int(retry.get("max_attempts", 3)):
        step.status, step.due_at = "ready", stamp + timedelta(seconds=backoff(retry, step.attempts))
        await session.flush()
        return True
    step.status, step.finished_at = "failed", stamp
    await session.flush()
    await _finish_run(session, run, "failed", f"step {step.name}: {error}", step.name)
    await session.flush()
    return True


# --- the worker ---


class Engine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        executor: Executor,
        *,
        lease_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        concurrency: int = 32,
        worker: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self.worker = worker or f"worker-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        WAKERS.add(self._wake)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claim and run steps, sweep timeouts and fire schedules, for as long as the process runs.

        A wake (a step finished or made ready) claims at once; the sweep, whose deadlines are
        poll-grained anyway, runs at most once per `poll_seconds` however often the worker wakes."""
        loop = asyncio.get_running_loop()
        swept = -self.poll_seconds
        try:
            while True:
                try:
                    if loop.time() - swept >= self.poll_seconds:
                        await self.sweep()
                        swept = loop.time()
                    await self.tick()
                except Exception:
                    log.exception("workflow engine round failed; trying again")
                    await asyncio.sleep(self.poll_seconds)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        finally:
            WAKERS.discard(self._wake)
            for task in list(self._inflight):
                task.cancel()

    async def tick(self) -> int:
        """Claim what this worker has room for and start it; how many were claimed."""
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        claimed = await self.claim(free)
        for c in claimed:
            task = asyncio.create_task(self.execute(c), name=f"workflow-step:{c.run_id}:{c.name}")
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def drain(self) -> None:
        """Wait for the steps in flight (tests, benchmarks)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def claim(self, limit: int) -> list[Claimed]:
        """Up to `limit` steps that are ready (or whose worker's lease lapsed), leased to this worker."""
        stamp = now()
        claimed: list[Claimed] = []
        async with self.sessions.begin() as session:
            query = (
                select(Step)
                .where(
                    or_(Step.status == "ready", Step.status == "running"),
                    Step.due_at <= stamp,
                )
                .order_by(Step.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            for step in (await session.execute(query)).scalars():
                run = await session.get(Run, step.run_id)
                assert run is not None
                if step.status == "running":
                    # Its worker's lease lapsed: the process died or hung mid-attempt.
                    await session.execute(
                        update(Attempt)
                        .where(
                            Attempt.run_id == step.run_id,
                            Attempt.step == step.name,
                            Attempt.number == step.attempts,
                            Attempt.status == "running",
                        )
                        .values(status="abandoned", error=f"lease of {step.worker} lapsed", finished_at=stamp)
                    )
                spec = step_spec(await _spec_of(session, run), step.name)
                done = select(Step.name, Step.output).where(Step.run_id == run.id, Step.status == "completed")
                outputs: dict[str, Any] = dict((await session.execute(done)).all())
                step.attempts += 1
                step.fence += 1
                step.worker = self.worker
                step.started_at = step.started_at or stamp
                step.error = None
                bad: StepError | None = None
                try:
                    given = resolve(
                        {k: v for k, v in spec.items() if k not in ("name", "needs", "retry", "type")},
                        {"input": run.input, "steps": {k: {"output": v} for k, v in outputs.items()}},
                    )
                except StepError as exc:
                    given, bad = None, exc
                session.add(
                    Attempt(
                        run_id=step.run_id,
                        step=step.name,
                        number=step.attempts,
                        org_id=step.org_id,
                        worker=self.worker,
                        status="running",
                        input=given,
                    )
                )
                if step.kind in WAITING_KINDS and bad is None:
                    # Nothing to run: the step waits (for an event or a decision) until its timeout.
                    wait = float(spec.get("timeout_seconds") or DEFAULT_WAIT_SECONDS)
                    step.status, step.due_at = "waiting", None
                    step.wait_until = stamp + timedelta(seconds=wait)
                    step.wait_event = spec.get("event_type")
                    step.state = {"match": spec.get("match", {})}
                    continue
                step.status, step.due_at = "running", stamp + self.lease
                await session.flush()
                if bad is not None:
                    await record(
                        session,
                        step,
                        fence=step.fence,
                        ok=False,
                        output=None,
                        error=str(bad),
                        retryable=False,
                    )
                    continue
                claimed.append(
                    Claimed(
                        run_id=step.run_id,
                        name=step.name,
                        kind=step.kind,
                        fence=step.fence,
                        attempt=step.attempts,
                        org_id=step.org_id,
                        actor=run.actor,
                        delegation=run.delegation,
                        spec=spec,
                        input=given,
                        state=dict(step.state or {}),
                    )
                )
        return claimed

    async def _renew(self, c: Claimed) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Step)
                .where(
                    Step.run_id == c.run_id,
                    Step.name == c.name,
                    Step.fence == c.fence,
                    Step.status == "running",
                )
                .values(due_at=now() + self.lease)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _save_state(self, c: Claimed, state: dict[str, Any]) -> None:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Step)
                .where(
                    Step.run_id == c.run_id,
                    Step.name == c.name,
                    Step.fence == c.fence,
                    Step.status == "running",
                )
                .values(state=state)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(f"{c.name} of {c.run_id}")
        c.state = state

    async def _heartbeat(self, c: Claimed, work: asyncio.Task[Any]) -> None:
        interval = self.lease.total_seconds() / 3
        while not work.done():
            await asyncio.sleep(interval)
            if not await self._renew(c):
                work.cancel()
                return

    async def execute(self, c: Claimed) -> None:
        timeout = c.spec.get("timeout_seconds")
        work = asyncio.create_task(self.executor(c, lambda state: self._save_state(c, state)))
        beat = asyncio.create_task(self._heartbeat(c, work))
        ok, output, error, retryable = False, None, None, True
        try:
            output = await asyncio.wait_for(asyncio.shield(work), timeout) if timeout else await work
            ok = True
        except TimeoutError:
            work.cancel()
            error = f"timed out after {timeout:g}s"
        except asyncio.CancelledError:
            if not work.cancelled():
                raise
            return  # the lease was lost: whoever holds it now records the step
        except LeaseLost:
            return
        except StepError as exc:
            error, retryable = str(exc), exc.retryable
        except Exception as exc:
            log.exception("workflow step raised", extra={"run_id": str(c.run_id), "step": c.name})
            error = f"{type(exc).__name__}: {exc}"
        finally:
            beat.cancel()
        try:
            async with self.sessions.begin() as session:
                step = await session.get(Step, (c.run_id, c.name))
                if step is not None:
                    await record(
                        session, step, fence=c.fence, ok=ok, output=output, error=error, retryable=retryable
                    )
        except Exception:
            # Not recorded: the lease lapses and the step runs again, as if the process had died.
            log.exception("recording a workflow step failed", extra={"run_id": str(c.run_id), "step": c.name})

    async def sweep(self) -> None:
        """Runs past their deadline fail; waits past theirs fail; schedules that are due start runs."""
        stamp = now()
        async with self.sessions.begin() as session:
            late = (
                select(Run)
                .where(Run.status == "running", Run.deadline < stamp)
                .with_for_update(skip_locked=True)
            )
            for run in (await session.execute(late)).scalars():
                await _finish_run(session, run, "failed", "the run timed out", None)
            waits = (
                select(Step)
                .where(Step.status == "waiting", Step.wait_until < stamp)
                .with_for_update(skip_locked=True)
            )
            for step in (await session.execute(waits)).scalars():
                what = "an event" if step.kind == "event" else "a decision"
                await record(
                    session,
                    step,
                    fence=step.fence,
                    ok=False,
                    output=None,
                    error=f"timed out waiting for {what}",
                    retryable=False,
                )
            due = (
                select(Definition)
                .where(Definition.next_fire_at.is_not(None), Definition.next_fire_at <= stamp)
                .with_for_update(skip_locked=True)
            )
            for definition in (await session.execute(due)).scalars():
                version = await session.get(Version, (definition.id, definition.latest_version))
                assert version is not None
                await start_run(
                    session,
                    definition,
                    version,
                    actor=definition.owner,
                    delegation=definition.delegation,
                    trigger="schedule",
                    input={
                        "scheduled_at": definition.next_fire_at.isoformat()
                        if definition.next_fire_at
                        else None
                    },
                )
                # Missed fires (the platform was down) are not replayed: the next one is after now.
                definition.next_fire_at = next_fire(definition.schedule, stamp)


# Every engine of this process: woken when a transaction made steps ready (shared/db after_commit).
WAKERS: set[asyncio.Event] = set()


def wake_all() -> None:
    for event in list(WAKERS):
        event.set()
