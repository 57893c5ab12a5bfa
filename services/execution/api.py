"""HTTP routes of `execution` (Judge0 submissions, the OpenHands runtime). Paths are relative to
`/api/execution` at the gateway."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, status
from fastapi.responses import StreamingResponse

from coder.services.execution import service
from coder.services.execution.config import ExecutionSettings
from coder.services.execution.models import Job
from coder.services.execution.schemas import JobCreate, JobRead, OutputRead, Status
from coder.services.execution.worker import Executor, executor
from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.deps import ClientsDep, RuntimeDep, settings_of
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import scoped

router = APIRouter(prefix="/v1", tags=["execution"])

Reader = Annotated[Principal, require("execution:read")]
Runner = Annotated[Principal, require("execution:run")]
SettingsDep = Annotated[ExecutionSettings, Depends(settings_of(ExecutionSettings))]
ENDED = (Status.FINISHED.value, Status.CANCELLED.value)


def _executor(runtime: RuntimeDep) -> Executor:
    return executor(runtime)


ExecutorDep = Annotated[Executor, Depends(_executor)]


@router.post(
    "/jobs",
    response_model=JobRead,
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {
            "description": "resources refused the reservation: the problem names the quota, the "
            "resource, what was requested, what is used and the limit"
        }
    },
)
async def create_job(
    body: JobCreate,
    session: SessionDep,
    clients: ClientsDep,
    settings: SettingsDep,
    principal: Runner,
    workers: ExecutorDep,
    after: BackgroundTasks,
) -> JobRead:
    """Queue a run of `command` (argv) or of `source` in `language`, in a sandbox with `limits`, no
    network unless `network`, `files` in its working directory and `outputs` brought back. A sandbox,
    a core and the memory limit are reserved in `resources` for the caller until the job ends; a quota
    without room refuses the job (409). Poll `GET /v1/jobs/{id}` or stream its output."""
    job = await service.create_job(
        session, clients, principal.org_id, principal.subject, body, settings.queue_seconds
    )
    # After the commit: this process's idle workers take it at once (others at their next poll).
    after.add_task(workers.wake.set)
    return JobRead.of(job)


@router.get("/jobs", response_model=Page[JobRead])
async def list_jobs(
    session: SessionDep,
    principal: Reader,
    params: PageDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    reference: Annotated[str | None, Query(max_length=255)] = None,
) -> Page[JobRead]:
    """The organization's jobs, newest first."""
    query = scoped(Job, principal.org_id)
    if status_ is not None:
        query = query.where(Job.status == status_.value)
    if reference is not None:
        query = query.where(Job.reference == reference)
    rows = await paginate(session, query, (Job.created_at, Job.id), params, descending=True)
    return rows.page(JobRead.of)


@router.get("/jobs/{job_id}", response_model=JobRead)
async def read_job(job_id: uuid.UUID, session: SessionDep, principal: Reader) -> JobRead:
    """A job: its status, and once ended its outcome, reason, exit code and output files."""
    return JobRead.of(await service.jobs(session, principal.org_id).get(job_id, Job.id == job_id))


@router.get("/jobs/{job_id}/output", response_model=OutputRead)
async def read_output(job_id: uuid.UUID, session: SessionDep, principal: Reader) -> OutputRead:
    """What the job wrote to stdout and stderr so far (all of it once it ended, up to its limit)."""
    job = await service.jobs(session, principal.org_id).get(job_id, Job.id == job_id)
    chunks = await service.output_since(session, job.id, 0)
    return OutputRead(
        status=Status(job.status),
        stdout="".join(c.data for c in chunks if c.stream == "stdout"),
        stderr="".join(c.data for c in chunks if c.stream == "stderr"),
    )


@router.get(
    "/jobs/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
)
async def stream_output(
    job_id: uuid.UUID, session: SessionDep, principal: Reader, runtime: RuntimeDep, settings: SettingsDep
) -> StreamingResponse:
    """The job's output as server-sent events while it runs: `stdout` and `stderr` events (`data` is
    `{"text": ...}`), then one `end` event holding the job. Starts from the beginning."""
    job = await service.jobs(session, principal.org_id).get(job_id, Job.id == job_id)

    async def events() -> AsyncIterator[str]:
        after = 0
        while True:
            async with runtime.sessions() as reader:
                chunks = await service.output_since(reader, job.id, after)
                current = await reader.get(Job, job.id)
            for chunk in chunks:
                after = chunk.id
                yield f"event: {chunk.stream}\ndata: {json.dumps({'text': chunk.data})}\n\n"
            if current is None:
                return
            if current.status in ENDED and not chunks:
                yield f"event: end\ndata: {JobRead.of(current).model_dump_json()}\n\n"
                return
            if not chunks:
                await asyncio.sleep(settings.tick_seconds)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/jobs/{job_id}/cancel", response_model=JobRead)
async def cancel_job(
    job_id: uuid.UUID, session: SessionDep, clients: ClientsDep, principal: Runner
) -> JobRead:
    """Cancel a job: a queued one ends now, a running one is killed within a moment (its status turns
    `cancelled` then); an ended job stays as it is."""
    return JobRead.of(await service.cancel(session, clients, principal.org_id, job_id))
