"""Stand-ins for the controllers the test control plane does not run (no kubelet, no StatefulSet
or Job controller): each writes, through the status subresource, what the real one would write
once the pods it manages are up. Used by the operator tests and by bench/bench_operator.py.
"""

from __future__ import annotations

import datetime as dt

from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from coder.operator.kube import Kube

BACKOFF = "Job has reached the specified backoff limit"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def statefulsets_become_ready(kube: Kube, namespace: str) -> int:
    """What the StatefulSet controller writes once its one pod is ready."""
    count = 0
    async for sts in kube.client.list(StatefulSet, namespace=namespace):
        assert sts.metadata is not None and sts.metadata.name is not None
        ready = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "currentReplicas": 1}
        await kube.client.patch(
            StatefulSet.Status,
            sts.metadata.name,
            {"status": {**ready, "updatedReplicas": 1, "observedGeneration": sts.metadata.generation}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        count += 1
    return count


async def jobs_finish(kube: Kube, namespace: str, *, succeeded: bool = True) -> list[str]:
    """What the Job controller writes when the migration pod exits 0 (or failed every retry)."""
    finished = []
    async for job in kube.client.list(Job, namespace=namespace):
        assert job.metadata is not None and job.metadata.name is not None
        t = now()
        at = {"lastProbeTime": t, "lastTransitionTime": t}
        if succeeded:
            conditions = [
                {"type": "SuccessCriteriaMet", "status": "True", **at},
                {"type": "Complete", "status": "True", **at},
            ]
            status = {"startTime": t, "completionTime": t, "succeeded": 1, "conditions": conditions}
        else:
            failure = {"status": "True", "reason": "BackoffLimitExceeded", "message": BACKOFF, **at}
            conditions = [{"type": "FailureTarget", **failure}, {"type": "Failed", **failure}]
            status = {"startTime": t, "failed": 7, "conditions": conditions}
        await kube.client.patch(
            Job.Status, job.metadata.name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
        )
        finished.append(job.metadata.name)
    return finished


async def pods_become_ready(kube: Kube, namespace: str) -> int:
    """What the kubelet writes when a container passes its readiness probe (the ReplicaSet and
    Deployment controllers, which do run, then count the pod as ready)."""
    t = now()
    count = 0
    async for pod in kube.client.list(Pod, namespace=namespace):
        assert pod.metadata is not None and pod.metadata.name is not None
        ready = [
            {"type": "Ready", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
        ]
        await kube.client.patch(
            Pod.Status,
            pod.metadata.name,
            {"status": {"phase": "Running", "conditions": ready}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        count += 1
    return count
