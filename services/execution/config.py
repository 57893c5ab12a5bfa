from __future__ import annotations

import os
import tempfile
from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coder.shared.settings import TargetSettings

# Where a pod finds its ServiceAccount's token (what lightkube's in-cluster configuration reads).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def in_cluster() -> bool:
    """In a Kubernetes pod given an API token: local sandboxes need root, a Job per run does not."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()


class Backend(StrEnum):
    AUTO = "auto"  # kubernetes in a pod with an API token, else bubblewrap if it works, else rlimits
    BUBBLEWRAP = "bubblewrap"
    RLIMITS = "rlimits"
    KUBERNETES = "kubernetes"


class ExecutionSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="EXECUTION_")

    # Where jobs run: `auto` is bubblewrap where it works, else rlimits; `kubernetes`, a Job per run.
    backend: Backend = Backend.AUTO
    # Jobs one process runs at once (each a worker claiming from the queue).
    workers: int = Field(default=2, ge=0, le=64)
    # How often an idle worker looks at the queue (a job created in this process wakes it at once).
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # How often a running job's output is saved, its cancel flag read and its heartbeat written.
    tick_seconds: float = Field(default=0.25, gt=0, le=10)
    # A running job whose worker has not written a heartbeat for this long is ended as lost.
    lost_after_seconds: float = Field(default=60.0, gt=1, le=3600)
    # Local sandboxes: job uids base..base+count-1 (never root; one job per uid at a time).
    uid_base: int = Field(default=61000, ge=1000, le=2**31 - 1)
    # How many uids, from `uid_base` on.
    uid_count: int = Field(default=64, ge=1, le=4096)
    # Where local sandboxes keep their jobs' files.
    work_root: Path = Path(tempfile.gettempdir()) / "coder-execution"
    # How long a reservation may wait in the queue on top of the job's wall time before it lapses.
    queue_seconds: int = Field(default=600, ge=1, le=86400)
    # The namespace Jobs go to in Kubernetes (the operator sets its platform's sandbox namespace).
    kube_namespace: str = "default"
    # The image that runs commands and code in Kubernetes (python3 and sh in it).
    kube_image: str = "python:3.11-slim"
    # How long a finished Job stays before Kubernetes deletes it (`ttlSecondsAfterFinished`).
    kube_ttl_seconds: int = Field(default=300, ge=0, le=86400)
