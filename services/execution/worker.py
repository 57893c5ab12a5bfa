"""The workers: each claims the oldest queued job, runs it in the process's sandbox, saves its output
while it runs and ends it with its event; a running job's heartbeat tells a lost worker apart."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coder.services.execution import service
from coder.services.execution.config import Backend, ExecutionSettings, in_cluster
from coder.services.execution.models import Job
from coder.services.execution.sandbox import Limits, LocalSandbox, RunResult, RunSpec, Sink, UidPool
from coder.services.execution.schemas import Outcome, Status
from coder.shared.http import ServiceClients
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)


class Runner(Protocol):
    kind: str

    def run(self, spec: RunSpec, sink: Sink) -> Awaitable[RunResult]: ...


class JobSink(Sink):
    """Buffers a job's output and saves it, with the heartbeat, once a tick."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], job: Job) -> None:
        self.sessions = sessions
        self.job_id, self.org_id = job.id, job.org_id
        self.pending: list[tuple[str, str]] = []
        self.decoders = {
            s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")
        }

    async def output(self, stream: str, data: bytes) -> None:
        text = self.decoders[stream].decode(data)
        if text:
            self.pending.append((stream, text))

    async def tick(self) -> bool:
        chunks, self.pending = self.pending, []
        async with self.sessions() as session, session.begin():
            return await service.beat(session, self.job_id, chunks, self.org_id)

    async def close(self) -> None:
        for stream, decoder in self.decoders.items():
            if rest := decoder.decode(b"", final=True):
                self.pending.append((stream, rest))
        await self.tick()


class Executor:
    """A process's workers and its sandbox."""

    def __init__(self, runtime: Runtime, settings: ExecutionSettings, runner: Runner | None = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self._runner = runner
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.wake = asyncio.Event()
        # False: the workers take no new job (a replica draining before it stops); queued jobs wait
        # for another replica or for this one to take them again.
        self.accepting = True
        # When a worker last looked at the queue, and for lost jobs (time.monotonic()).
        self._looked = self._ended_lost = 0.0

    @property
    def clients(self) -> ServiceClients:
        return self.runtime.clients

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = _runner(self.settings)
        return self._runner

    async def work(self) -> None:
        if self.settings.workers == 0:
            return
        try:
            kind = self.runner.kind
        except RuntimeError as exc:
            # Queued jobs wait for a replica that can run them; the API still takes and serves jobs.
            log.error("this process runs no jobs", extra={"why": str(exc)})
            return
        log.info("execution workers started", extra={"sandbox": kind, "workers": self.settings.workers})
        await asyncio.gather(*(self._worker() for _ in range(self.settings.workers)))

    async def _worker(self) -> None:
        woken = True
        while True:
            job = None
            # An idle worker looks at the queue when woken, else once per `poll_seconds` for all the
            # idle workers together (not each: an idle process's polls cost it more CPU than its
            # requests; bench/bench_embeddings.py).
            if self.accepting and (woken or time.monotonic() - self._looked >= self.settings.poll_seconds):
                self._looked = time.monotonic()
                try:
                    job = await self._claim()
                except Exception:
                    log.exception("claiming a job failed")
            if job is None:
                woken = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)
                    woken = True
                self.wake.clear()
                continue
            # A job was there: the idle workers look for the next one now, as does this one after it.
            woken = True
            self.wake.set()
            try:
                await self.run(job)
            except Exception as exc:
                log.exception("running a job failed", extra={"job_id": str(job.id)})
                failed = RunResult(Outcome.ERROR.value, f"the worker failed: {type(exc).__name__}")
                # If even this fails (the database is away), the job's heartbeat stops and it is
                # ended as lost; the worker carries on.
                with contextlib.suppress(Exception):
                    await self._end(job.id, failed)

    async def _claim(self) -> Job | None:
        async with self.runtime.sessions() as session, session.begin():
            # Lost jobs are looked for at most once per poll interval, by whichever worker looks then.
            if time.monotonic() - self._ended_lost >= self.settings.poll_seconds:
                self._ended_lost = time.monotonic()
                await service.end_lost(session, self.settings.lost_after_seconds)
            return await service.claim(session, self.name, self.runner.kind)

    async def run(self, job: Job) -> None:
        argv, files = service.argv_and_files(job)
        spec = RunSpec(
            job_id=str(job.id),
            argv=argv,
            limits=Limits(**job.limits),
            network=job.network,
            env=job.env,
            files=files,
            stdin=job.stdin,
            outputs=tuple(job.outputs),
        )
        sink = JobSink(self.runtime.sessions, job)
        # Cancelled before it started (between the claim and now): not run at all.
        if await sink.tick():
            result = RunResult(Outcome.CANCELLED.value, "cancelled")
        else:
            result = await self.runner.run(spec, sink)
        await sink.close()
        await self._end(job.id, result)

    async def _end(self, job_id: uuid.UUID, result: RunResult) -> None:
        async with self.runtime.sessions() as session, session.begin():
            job = (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one()
            if job.status not in (Status.QUEUED.value, Status.RUNNING.value):
                return
            outcome = Outcome(result.outcome)
            await service.finish(
                session,
                job,
                status=Status.CANCELLED if outcome is Outcome.CANCELLED else Status.FINISHED,
                outcome=outcome,
                reason=result.reason,
                exit_code=result.exit_code,
                signal=result.signal,
                files=result.files,
                missing=result.missing,
            )
            await service.release(self.clients, job)


_executors: weakref.WeakKeyDictionary[Runtime, Executor] = weakref.WeakKeyDictionary()


def executor(runtime: Runtime) -> Executor:
    """The process's executor (made once: the setup and the background task share it)."""
    if runtime not in _executors:
        settings = runtime.config(ExecutionSettings)
        _executors[runtime] = Executor(runtime, settings)
    return _executors[runtime]


def _runner(settings: ExecutionSettings) -> Runner:
    if settings.backend is Backend.KUBERNETES or (settings.backend is Backend.AUTO and in_cluster()):
        from coder.services.execution.kube import KubeRunner

        return KubeRunner(settings)
    pool = UidPool(settings.uid_base, settings.uid_count, settings.work_root / "uids")
    return LocalSandbox.choose(settings.backend.value, settings.work_root, pool, settings.tick_seconds)


async def work(runtime: Runtime) -> None:
    """The background task: this process's workers."""
    await executor(runtime).work()
