from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from coder.services.execution.sandbox import safe_path
from coder.shared.schemas import Input

MiB = 1 << 20
GiB = 1 << 30
# What a request may carry in: files (decoded), source, stdin.
MAX_FILES_BYTES = 8 * MiB
MAX_SOURCE_CHARS = 512 * 1024
MAX_STDIN_BYTES = 1 * MiB
RelativePath = Annotated[str, Field(min_length=1, max_length=255)]


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    EXITED = "exited"
    CPU_TIME = "cpu_time"
    WALL_TIME = "wall_time"
    MEMORY = "memory"
    PROCESSES = "processes"
    OUTPUT = "output"
    CANCELLED = "cancelled"
    ERROR = "error"


class Language(StrEnum):
    PYTHON = "python"
    SH = "sh"
    BASH = "bash"


# language -> (file the source is written to, argv running it)
RUNNERS: dict[Language, tuple[str, list[str]]] = {
    Language.PYTHON: ("main.py", ["python3", "-I", "main.py"]),
    Language.SH: ("main.sh", ["sh", "main.sh"]),
    Language.BASH: ("main.sh", ["bash", "main.sh"]),
}


class Limits(Input):
    """Limits of one run; each left out takes its default. Exceeding one ends the run with that
    outcome."""

    cpu_seconds: int = Field(default=10, ge=1, le=600, description="CPU time, seconds")
    wall_seconds: int = Field(default=60, ge=1, le=3600, description="Wall-clock time, seconds")
    memory_bytes: int = Field(default=512 * MiB, ge=32 * MiB, le=8 * GiB, description="Address space, bytes")
    processes: int = Field(default=64, ge=4, le=1024, description="Processes and threads at once")
    output_bytes: int = Field(
        default=1 * MiB, ge=1024, le=64 * MiB, description="stdout and stderr together, bytes"
    )
    file_bytes: int = Field(default=64 * MiB, ge=1024, le=1 * GiB, description="Largest file written, bytes")


def _decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be base64") from exc


class JobCreate(Input):
    """A command (argv) or code (language and source) to run."""

    command: list[Annotated[str, Field(max_length=8192)]] | None = Field(
        default=None, min_length=1, max_length=256, description='argv, e.g. ["sh", "-c", "echo hi"]'
    )
    language: Language | None = Field(default=None, description="With `source`: python, sh or bash")
    source: str | None = Field(default=None, max_length=MAX_SOURCE_CHARS)
    stdin: str = Field(default="", max_length=MAX_STDIN_BYTES, description="Text on the program's stdin")
    env: dict[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")],
        Annotated[str, Field(max_length=4096)],
    ] = Field(default_factory=dict, max_length=64)
    files: dict[RelativePath, str] = Field(
        default_factory=dict,
        max_length=256,
        description="Files put in the working directory first: relative path -> base64 content "
        f"(at most {MAX_FILES_BYTES} bytes in all)",
    )
    outputs: list[RelativePath] = Field(
        default_factory=list,
        max_length=32,
        description="Relative paths of files to bring back after the run (in the job's `files`)",
    )
    limits: Limits = Field(default_factory=Limits)
    network: bool = Field(default=False, description="Let the program reach the network")
    team_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Whose quota also applies"
    )
    reference: str | None = Field(default=None, max_length=255, description="Yours, e.g. a plan step")

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, str]) -> dict[str, str]:
        total = 0
        for name, content in files.items():
            safe_path(name)
            total += len(_decode(content))
        if total > MAX_FILES_BYTES:
            raise ValueError(f"the files hold {total} bytes, more than {MAX_FILES_BYTES}")
        return files

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, outputs: list[str]) -> list[str]:
        for name in outputs:
            safe_path(name)
        return outputs

    @model_validator(mode="after")
    def _what(self) -> JobCreate:
        if (self.command is None) == (self.source is None):
            raise ValueError("give either `command` or `language` and `source`")
        if self.source is not None and self.language is None:
            raise ValueError("`source` needs a `language`")
        if self.command is None and self.language is not None and self.source is None:
            raise ValueError("`language` needs a `source`")
        return self


class JobRead(BaseModel):
    id: uuid.UUID
    status: Status
    outcome: Outcome | None
    reason: str
    exit_code: int | None
    signal: int | None
    sandbox: str | None
    command: list[str] | None
    language: Language | None
    limits: Limits
    network: bool
    reference: str | None
    team_id: str | None
    created_by: str
    stdout_bytes: int
    stderr_bytes: int
    outputs: list[str]
    files: dict[str, str] = Field(description="The declared outputs found after the run: path -> base64")
    missing_outputs: list[str]
    reservation_id: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Any) -> JobRead:
        return cls(
            id=job.id,
            status=job.status,
            outcome=job.outcome,
            reason=job.reason,
            exit_code=job.exit_code,
            signal=job.signal,
            sandbox=job.sandbox,
            command=job.command,
            language=job.language,
            limits=Limits.model_validate(job.limits),
            network=job.network,
            reference=job.reference,
            team_id=job.team_id,
            created_by=job.created_by,
            stdout_bytes=job.stdout_bytes,
            stderr_bytes=job.stderr_bytes,
            outputs=job.outputs,
            files=job.output_files,
            missing_outputs=job.missing_outputs,
            reservation_id=job.reservation_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class OutputRead(BaseModel):
    """What the job printed so far (all of it once it ended), each capped by its output limit."""

    status: Status
    stdout: str
    stderr: str
