"""Running a job in Kubernetes: a Job per run, created through the API with lightkube (as the operator
does), in the platform's sandbox namespace (the operator's `spec.sandbox`: Pod Security `restricted`
enforced, deny-all by default, and nothing of the platform's to mount), with the restricted security
context, a NetworkPolicy of its own (deny-all, or egress only for a job granted network), resource
limits, `activeDeadlineSeconds` and a TTL. The builders are pure functions of
the run; `KubeRunner` creates the objects, follows the Job's status and reads its pod's log.

Files come in through a ConfigMap copied into an emptyDir working directory; declared output files
do not come back from a pod (they are reported missing)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from typing import Any, cast

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Pod
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import CascadeType, PatchType

from coder.services.execution.config import ExecutionSettings
from coder.services.execution.sandbox import (
    CANCELLED,
    ERROR,
    EXITED,
    KUBERNETES,
    MEMORY,
    OUTPUT,
    SANDBOX_HOME,
    WALL_TIME,
    RunResult,
    RunSpec,
    Sink,
)

log = logging.getLogger(__name__)

JOB_LABEL = "execution.coderide.io/job"
FIELD_MANAGER = "coder-execution"
SANDBOX_UID = 65534
INPUT_DIR = "/input"
# Run before the program: the files in, and the CPU-time and file-size limits a pod has no field for.
_PRELUDE = 'ulimit -t "$CPU" && ulimit -f "$FSIZE" && cp -rL /input/. . 2>/dev/null; exec "$@"'


def name_of(spec: RunSpec) -> str:
    return f"execution-{spec.job_id}"


def labels_of(spec: RunSpec) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": FIELD_MANAGER, JOB_LABEL: spec.job_id}


def config_map(spec: RunSpec, namespace: str) -> dict[str, Any] | None:
    """The job's files (and stdin), as binaryData keyed f0, f1... (keys cannot hold `/`)."""
    if not spec.files:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name_of(spec), "namespace": namespace, "labels": labels_of(spec)},
        "binaryData": {
            f"f{i}": base64.b64encode(data).decode() for i, data in enumerate(spec.files.values())
        },
    }


def network_policy(spec: RunSpec, namespace: str) -> dict[str, Any]:
    """Nothing in, nothing out for the job's pod (both policy types, no rules); with network granted,
    out to anywhere, still nothing in (policies add up: the sandbox's default deny-all would block it)."""
    rules: dict[str, Any] = {"egress": [{}]} if spec.network else {}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name_of(spec), "namespace": namespace, "labels": labels_of(spec)},
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: spec.job_id}},
            "policyTypes": ["Ingress", "Egress"],
            **rules,
        },
    }


def job(spec: RunSpec, namespace: str, image: str, ttl_seconds: int) -> dict[str, Any]:
    limits = spec.limits
    resources = {
        "cpu": "1",
        "memory": str(limits.memory_bytes),
        "ephemeral-storage": str(limits.file_bytes * 2),
    }
    volumes: list[dict[str, Any]] = [
        {"name": "work", "emptyDir": {"sizeLimit": str(limits.file_bytes * 2)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": str(limits.file_bytes)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": SANDBOX_HOME},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's own emptyDir
    ]
    if spec.files:
        items = [{"key": f"f{i}", "path": path} for i, path in enumerate(spec.files)]
        volumes.append({"name": "input", "configMap": {"name": name_of(spec), "items": items}})
        mounts.append({"name": "input", "mountPath": INPUT_DIR, "readOnly": True})
    env = [
        {"name": "HOME", "value": SANDBOX_HOME},
        {"name": "CPU", "value": str(limits.cpu_seconds)},
        {"name": "FSIZE", "value": str(max(limits.file_bytes // 512, 1))},
        *({"name": k, "value": v} for k, v in spec.env.items()),
    ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name_of(spec), "namespace": namespace, "labels": labels_of(spec)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": limits.wall_seconds,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "metadata": {"labels": labels_of(spec)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SANDBOX_UID,
                        "runAsGroup": SANDBOX_UID,
                        "fsGroup": SANDBOX_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "run",
                            "image": image,
                            "command": ["sh", "-c", _PRELUDE, "sh", *spec.argv],
                            "workingDir": SANDBOX_HOME,
                            "env": env,
                            "resources": {"limits": resources, "requests": resources},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "privileged": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def owned_by(manifest: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """`manifest` owned by the Job, so the Job's TTL removes it too."""
    meta = owner["metadata"]
    reference = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [reference]}}


def conclusion(job_status: dict[str, Any]) -> tuple[str, str] | None:
    """(outcome, reason) once the Job has ended, from its conditions; None while it runs."""
    for condition in job_status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return EXITED, "exited with 0"
        if condition.get("type") == "Failed":
            if condition.get("reason") == "DeadlineExceeded":
                return WALL_TIME, "its activeDeadlineSeconds passed"
            return ERROR, condition.get("message") or condition.get("reason") or "the Job failed"
    return None


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = (status.get("state") or {}).get("terminated")
        if state:
            return cast(dict[str, Any], state)
    return None


class KubeRunner:
    kind = KUBERNETES

    def __init__(self, settings: ExecutionSettings, client: AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            # In-cluster credentials in a pod, else $KUBECONFIG.
            self._client = AsyncClient(
                config=KubeConfig.from_env(), field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(30)
            )
        return self._client

    async def run(self, spec: RunSpec, sink: Sink) -> RunResult:
        namespace = self.settings.kube_namespace
        try:
            created = await self._create(spec, namespace)
        except ApiError as exc:
            return RunResult(ERROR, f"the Kubernetes API refused the Job: {exc.status.message}")
        started = time.monotonic()
        name = name_of(spec)
        while True:
            await asyncio.sleep(self.settings.tick_seconds)
            current = (await self.client.get(Job, name, namespace=namespace)).to_dict()
            ended = conclusion(current.get("status") or {})
            if ended is not None:
                break
            if await sink.tick():
                await self._delete(name, namespace)
                return RunResult(CANCELLED, "cancelled")
            if time.monotonic() - started > spec.limits.wall_seconds + 120:
                # The Job controller should have ended it at its deadline; it did not (none runs?).
                await self._delete(name, namespace)
                return RunResult(WALL_TIME, f"still running after {spec.limits.wall_seconds} s of wall time")
        outcome, reason = ended
        result = RunResult(
            outcome, reason, exit_code=0 if outcome == EXITED else None, missing=list(spec.outputs)
        )
        pod = await self._pod(spec, namespace)
        state = terminated(pod) if pod else None
        if state is not None:
            code = int(state.get("exitCode", 0))
            result.exit_code = code
            if state.get("reason") == "OOMKilled":
                result.outcome, result.reason = (
                    MEMORY,
                    f"killed past its memory limit of {spec.limits.memory_bytes} bytes",
                )
            elif outcome == ERROR:
                result.outcome, result.reason = EXITED, f"exited with {code}"
        if pod is not None:
            await self._log(pod["metadata"]["name"], namespace, spec, sink, result)
        del created
        return result

    async def _create(self, spec: RunSpec, namespace: str) -> dict[str, Any]:
        policy = network_policy(spec, namespace)
        inputs = config_map(spec, namespace)
        # The policy first: the pod never runs a moment without it.
        await self.client.create(cast(NetworkPolicy, NetworkPolicy.from_dict(policy)))
        if inputs is not None:
            await self.client.create(cast(ConfigMap, ConfigMap.from_dict(inputs)))
        manifest = job(spec, namespace, self.settings.kube_image, self.settings.kube_ttl_seconds)
        created: dict[str, Any] = (await self.client.create(cast(Job, Job.from_dict(manifest)))).to_dict()
        children: tuple[tuple[Any, dict[str, Any] | None], ...] = (
            (NetworkPolicy, policy),
            (ConfigMap, inputs),
        )
        for kind, child in children:
            if child is not None:
                patch = {"metadata": owned_by(child, created)["metadata"]}
                await self.client.patch(
                    kind, child["metadata"]["name"], patch, namespace=namespace, patch_type=PatchType.MERGE
                )
        return created

    async def _pod(self, spec: RunSpec, namespace: str) -> dict[str, Any] | None:
        async for pod in self.client.list(Pod, namespace=namespace, labels={JOB_LABEL: spec.job_id}):
            return cast(dict[str, Any], pod.to_dict())
        return None

    async def _log(self, pod: str, namespace: str, spec: RunSpec, sink: Sink, result: RunResult) -> None:
        total = 0
        with contextlib.suppress(ApiError, httpx2.HTTPError):
            async for line in self.client.log(pod, namespace=namespace, container="run"):
                data = line.encode()
                room = spec.limits.output_bytes - total
                total += len(data)
                if room > 0:
                    await sink.output("stdout", data[:room])
                if total > spec.limits.output_bytes:
                    result.outcome, result.reason = (
                        OUTPUT,
                        f"the output passed {spec.limits.output_bytes} bytes",
                    )
                    break

    async def _delete(self, name: str, namespace: str) -> None:
        with contextlib.suppress(ApiError):
            await self.client.delete(Job, name, namespace=namespace, cascade=CascadeType.FOREGROUND)
