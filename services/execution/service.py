"""Jobs: created with a reservation in `resources`, queued in PostgreSQL, claimed by one worker
(`FOR UPDATE SKIP LOCKED`), ended once with their event."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.execution.models import Base, Job, OutputChunk
from coder.services.execution.schemas import RUNNERS, JobCreate, Outcome, Status
from coder.shared.errors import Problem
from coder.shared.http import ServiceClients
from coder.shared.repository import OrgScoped

log = logging.getLogger(__name__)

# CPU a job holds in `resources` while it waits and runs (one core: RLIMIT_CPU counts one core's time).
RESERVED_CPU = "1"


def jobs(session: AsyncSession, org_id: str) -> OrgScoped[Job]:
    return OrgScoped(Job, session, org_id, "job")


async def create_job(
    session: AsyncSession,
    clients: ServiceClients,
    org_id: str,
    user_id: str,
    body: JobCreate,
    queue_seconds: int,
) -> Job:
    """The queued job, with its reservation held; nothing is stored when resources refuses."""
    job = Job(
        id=uuid.uuid4(),
        org_id=org_id,
        team_id=body.team_id,
        created_by=user_id,
        reference=body.reference,
        status=Status.QUEUED.value,
        command=body.command,
        language=body.language.value if body.language else None,
        source=body.source,
        stdin=body.stdin.encode(),
        env=dict(body.env),
        limits=body.limits.model_dump(),
        network=body.network,
        files=dict(body.files),
        outputs=list(body.outputs),
    )
    job.reservation_id, job.release_token = await reserve(clients, job, queue_seconds)
    session.add(job)
    await session.flush()
    await session.refresh(job)
    return job


def argv_and_files(job: Job) -> tuple[list[str], dict[str, bytes]]:
    """What runs and the files it finds: the source of code is one more file."""
    files = {name: base64.b64decode(content) for name, content in job.files.items()}
    if job.command is not None:
        return list(job.command), files
    assert job.language is not None
    assert job.source is not None
    filename, argv = RUNNERS[job.language]  # type: ignore[index]
    return argv, {**files, filename: job.source.encode()}


# --- the queue ---


async def claim(session: AsyncSession, worker: str, sandbox: str) -> Job | None:
    """The oldest queued job, now running on `worker`; another replica's worker skips it."""
    job = (
        await session.execute(
            select(Job)
            .where(Job.status == Status.QUEUED.value)
            .order_by(Job.created_at, Job.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if job is None:
        return None
    job.status = Status.RUNNING.value
    job.worker = worker
    job.sandbox = sandbox
    job.started_at = job.heartbeat_at = func.now()
    await session.flush()
    await session.refresh(job)
    return job


async def beat(session: AsyncSession, job_id: uuid.UUID, chunks: list[tuple[str, str]], org_id: str) -> bool:
    """Save output, write the heartbeat; True if the job was asked to stop."""
    if chunks:
        session.add_all(OutputChunk(job_id=job_id, org_id=org_id, stream=s, data=d) for s, d in chunks)
    added = {"stdout": 0, "stderr": 0}
    for stream, data in chunks:
        added[stream] += len(data.encode())
    cancelled = (
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                heartbeat_at=func.now(),
                stdout_bytes=Job.stdout_bytes + added["stdout"],
                stderr_bytes=Job.stderr_bytes + added["stderr"],
            )
            .returning(Job.cancel_requested)
        )
    ).scalar_one()
    return bool(cancelled)


async def finish(
    session: AsyncSession,
    job: Job,
    *,
    status: Status,
    outcome: Outcome,
    reason: str,
    exit_code: int | None = None,
    signal: int | None = None,
    files: dict[str, bytes] | None = None,
    missing: list[str] | None = None,
) -> None:
    """End the job once, with its event in the same transaction."""
    job.status = status.value
    job.outcome = outcome.value
    job.reason = reason
    job.exit_code = exit_code
    job.signal = signal
    job.output_files = {name: base64.b64encode(data).decode() for name, data in (files or {}).items()}
    job.missing_outputs = list(missing or [])
    job.finished_at = func.now()
    await session.flush()
    await session.refresh(job)
    duration = (
        (job.finished_at - job.started_at).total_seconds() if job.started_at and job.finished_at else None
    )
    await Base.events.publish(
        session,
        "execution.job.finished",
        {
            "job_id": str(job.id),
            "status": job.status,
            "outcome": job.outcome,
            "reason": job.reason,
            "exit_code": job.exit_code,
            "signal": job.signal,
            "sandbox": job.sandbox,
            "reference": job.reference,
            "user_id": job.created_by,
            "duration_seconds": max(duration, 0.0) if duration is not None else None,
        },
        org_id=job.org_id,
        subject=str(job.id),
    )


async def cancel(session: AsyncSession, clients: ServiceClients, org_id: str, job_id: uuid.UUID) -> Job:
    """A queued job ends here (its reservation released); a running one is flagged and its worker kills
    it within a tick; an ended one stays as it is."""
    job = await jobs(session, org_id).get(job_id, Job.id == job_id, lock=True)
    if job.status == Status.QUEUED.value:
        await finish(
            session, job, status=Status.CANCELLED, outcome=Outcome.CANCELLED, reason="cancelled before it ran"
        )
        await release_for_user(clients, job)
    elif job.status == Status.RUNNING.value:
        job.cancel_requested = True
        await session.flush()
    return job


async def end_lost(session: AsyncSession, lost_after_seconds: float) -> list[Job]:
    """Running jobs whose worker stopped writing heartbeats (its process died): ended as errors, never
    run again (a command may have done half its work)."""
    cutoff = func.now() - timedelta(seconds=lost_after_seconds)
    rows = (
        await session.execute(
            select(Job)
            .where(Job.status == Status.RUNNING.value, Job.heartbeat_at < cutoff)
            .limit(100)
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    lost = list(rows)
    for job in lost:
        await finish(
            session,
            job,
            status=Status.FINISHED,
            outcome=Outcome.ERROR,
            reason=f"its worker ({job.worker}) stopped while it ran",
        )
    return lost


async def output_since(session: AsyncSession, job_id: uuid.UUID, after: int) -> list[OutputChunk]:
    return list(
        (
            await session.execute(
                select(OutputChunk)
                .where(OutputChunk.job_id == job_id, OutputChunk.id > after)
                .order_by(OutputChunk.id)
            )
        ).scalars()
    )


# --- quota in resources ---


async def reserve(clients: ServiceClients, job: Job, queue_seconds: int) -> tuple[uuid.UUID, str]:
    """Hold a sandbox, a core and the job's memory for the user; resources' refusal (409 naming the
    quota, requested, used and limit) is the request's answer."""
    resources = clients.client("resources", caller="execution")
    limits: dict[str, Any] = job.limits
    answer = await resources.post(
        "/v1/reservations",
        json={
            "team_id": job.team_id,
            "resources": {"sandboxes": 1, "cpu": RESERVED_CPU, "memory": limits["memory_bytes"]},
            "ttl_seconds": limits["wall_seconds"] + queue_seconds,
            "reference": f"execution:{job.id}",
        },
    )
    if answer.status_code != 201:
        raise passed_on(answer)
    # The token this reservation is released with later, by whichever worker ends the job.
    token = await clients.workload_token("execution", "resources")
    return uuid.UUID(answer.json()["id"]), token


async def release_for_user(clients: ServiceClients, job: Job) -> None:
    """Release during the user's own request (cancelling a queued job)."""
    if job.reservation_id is None:
        return
    answer = await clients.client("resources", caller="execution").delete(
        f"/v1/reservations/{job.reservation_id}"
    )
    _released(job, answer)


async def release(clients: ServiceClients, job: Job) -> None:
    """Release from a worker, with the token kept at creation; if it expired, the reservation lapses at
    its TTL instead."""
    if job.reservation_id is None or job.release_token is None:
        return
    try:
        answer = await clients.client("resources").delete(
            f"/v1/reservations/{job.reservation_id}", headers={"authorization": f"Bearer {job.release_token}"}
        )
    except httpx.HTTPError as exc:
        log.warning("releasing a reservation failed", extra={"job_id": str(job.id), "error": str(exc)})
        return
    _released(job, answer)


def _released(job: Job, answer: httpx.Response) -> None:
    if answer.status_code in (204, 404):
        job.release_token = None
    else:
        log.warning(
            "releasing a reservation failed; it lapses at its TTL",
            extra={"job_id": str(job.id), "status": answer.status_code},
        )


def passed_on(answer: httpx.Response) -> Problem:
    try:
        problem = answer.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1] or None
    known = {"type", "title", "status", "detail", "instance", "errors"}
    extensions = {k: v for k, v in problem.items() if k not in known}
    status = answer.status_code if answer.status_code in (401, 403, 409, 429) else 502
    detail = problem.get("detail") or f"resources answered {answer.status_code}"
    return Problem(f"quota: {detail}", status=status, slug=slug, title=problem.get("title"), **extensions)
