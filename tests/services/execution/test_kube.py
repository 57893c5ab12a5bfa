"""The Kubernetes backend against a real API server (tests/support/kube.py). No kubelet and no Job
controller run there: the test writes the Job's (and its pod's) status as they would, through the
status subresources, and checks what the runner created and how it reads the end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from coder.services.execution import config
from coder.services.execution.config import ExecutionSettings
from coder.services.execution.kube import JOB_LABEL, KubeRunner, name_of
from coder.services.execution.sandbox import Limits, RunResult, RunSpec, Sink
from coder.services.execution.worker import _runner
from coder.tests.support.kube import ControlPlane, kube_control_plane
from coder.tests.support.platform import wait_until

__all__ = ["kube_control_plane"]

LIMITS = Limits(
    cpu_seconds=5,
    wall_seconds=30,
    memory_bytes=256 << 20,
    processes=32,
    output_bytes=65536,
    file_bytes=1 << 20,
)


class Cancel(Sink):
    def __init__(self) -> None:
        self.cancel = False

    async def output(self, stream: str, data: bytes) -> None:
        pass

    async def tick(self) -> bool:
        return self.cancel


@pytest.fixture
async def kube(kube_control_plane: ControlPlane) -> AsyncIterator[tuple[AsyncClient, str]]:
    client = AsyncClient(config=KubeConfig.from_file(str(kube_control_plane.kubeconfig)))
    namespace = f"exec-{uuid.uuid4().hex[:8]}"
    await client.create(cast(Namespace, Namespace.from_dict({"metadata": {"name": namespace}})))
    yield client, namespace
    await client.delete(Namespace, namespace)
    await client.close()


def runner(client: AsyncClient, namespace: str) -> KubeRunner:
    settings = ExecutionSettings(kube_namespace=namespace, tick_seconds=0.05, kube_ttl_seconds=120)
    return KubeRunner(settings, client)


async def created(client: AsyncClient, namespace: str, spec: RunSpec) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], (await client.get(Job, name_of(spec), namespace=namespace)).to_dict())
        except ApiError:
            return None

    job: dict[str, Any] = await wait_until(found, what="the Job")
    return job


async def job_status(client: AsyncClient, namespace: str, name: str, kind: str, reason: str) -> None:
    """What the Job controller writes when the Job ends."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "status": "True",
        "reason": reason,
        "message": reason,
        "lastTransitionTime": now,
        "lastProbeTime": now,
    }
    if kind == "Complete":
        conditions = [{**condition, "type": "SuccessCriteriaMet"}, {**condition, "type": "Complete"}]
        status: dict[str, Any] = {"succeeded": 1, "completionTime": now}
    else:
        conditions = [{**condition, "type": "FailureTarget"}, {**condition, "type": "Failed"}]
        status = {"failed": 1}
    status.update(startTime=now, conditions=conditions)
    await client.patch(Job.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE)


async def cancelled_while_running(run: KubeRunner, client: AsyncClient, namespace: str) -> None:
    """A run cancelled while its Job runs ends `cancelled`, and its Job is deleted (or being deleted)."""
    spec = RunSpec(job_id=str(uuid.uuid4()), argv=["sleep", "600"], limits=LIMITS)
    sink = Cancel()
    task = asyncio.create_task(run.run(spec, sink))
    await created(client, namespace, spec)
    sink.cancel = True
    assert (await asyncio.wait_for(task, 30)).outcome == "cancelled"

    async def gone_or_deleting() -> bool:
        try:
            job = await client.get(Job, name_of(spec), namespace=namespace)
        except ApiError:
            return True
        return job.metadata is not None and job.metadata.deletionTimestamp is not None

    await wait_until(gone_or_deleting, what="the Job to be deleted")


async def test_a_job_per_run_restricted_and_without_network(kube: tuple[AsyncClient, str]) -> None:
    client, namespace = kube
    spec = RunSpec(
        job_id=str(uuid.uuid4()),
        argv=["python3", "main.py"],
        limits=LIMITS,
        files={"main.py": b"print('hi')", "data/in.txt": b"x"},
        outputs=("out.txt",),
    )
    task: asyncio.Task[RunResult] = asyncio.create_task(runner(client, namespace).run(spec, Cancel()))
    job = await created(client, namespace, spec)
    assert job["spec"]["activeDeadlineSeconds"] == 30 and job["spec"]["ttlSecondsAfterFinished"] == 120
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65534
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"] == str(256 << 20)
    assert container["resources"]["limits"]["cpu"] == "1"
    assert container["command"][-2:] == ["python3", "main.py"]

    # Deny-all for exactly this job's pod, and the files, both owned by the Job (its TTL removes them).
    policy = (await client.get(NetworkPolicy, name_of(spec), namespace=namespace)).to_dict()
    assert policy["spec"]["podSelector"] == {"matchLabels": {JOB_LABEL: spec.job_id}}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    files = (await client.get(ConfigMap, name_of(spec), namespace=namespace)).to_dict()
    assert sorted(files["binaryData"]) == ["f0", "f1"]
    for child in (
        (await client.get(NetworkPolicy, name_of(spec), namespace=namespace)).to_dict(),
        (await client.get(ConfigMap, name_of(spec), namespace=namespace)).to_dict(),
    ):
        assert [o["uid"] for o in child["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]

    await job_status(client, namespace, name_of(spec), "Failed", "DeadlineExceeded")
    result = await asyncio.wait_for(task, 30)
    assert (result.outcome, result.reason) == ("wall_time", "its activeDeadlineSeconds passed")
    assert result.missing == ["out.txt"]


async def test_ends_read_from_the_pod_and_cancel(kube: tuple[AsyncClient, str]) -> None:
    client, namespace = kube
    run = runner(client, namespace)
    spec = RunSpec(job_id=str(uuid.uuid4()), argv=["sh", "-c", "x"], limits=LIMITS, network=True)
    task = asyncio.create_task(run.run(spec, Cancel()))
    await created(client, namespace, spec)
    # Network granted: out to anywhere (over the sandbox's default deny-all), still nothing in.
    policy = (await client.get(NetworkPolicy, name_of(spec), namespace=namespace)).to_dict()["spec"]
    assert (sorted(policy["policyTypes"]), policy["egress"]) == (["Egress", "Ingress"], [{}])
    assert "ingress" not in policy
    # Its pod, as the Job controller would make it, killed past its memory limit as the kubelet says.
    labels = {JOB_LABEL: spec.job_id}
    pod: dict[str, Any] = {
        "metadata": {"name": f"{name_of(spec)}-abcde", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "run", "image": "python:3.11-slim"}]},
    }
    await client.create(cast(Pod, Pod.from_dict(pod)))
    terminated = {"exitCode": 137, "reason": "OOMKilled"}
    state = {
        "containerStatuses": [
            {
                "name": "run",
                "image": "i",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ]
    }
    await client.patch(
        Pod.Status,
        pod["metadata"]["name"],
        {"status": state},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await job_status(client, namespace, name_of(spec), "Failed", "BackoffLimitExceeded")
    result = await asyncio.wait_for(task, 30)
    assert (result.outcome, result.exit_code) == ("memory", 137), result

    await cancelled_while_running(run, client, namespace)


def test_auto_is_kubernetes_in_a_pod_with_an_api_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    monkeypatch.setattr(config, "SERVICE_ACCOUNT_TOKEN", token)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert not config.in_cluster()  # a pod without a token (automountServiceAccountToken: false)
    token.write_text("a token")
    assert config.in_cluster()
    assert isinstance(_runner(ExecutionSettings()), KubeRunner)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert not config.in_cluster()  # a token file outside a cluster
