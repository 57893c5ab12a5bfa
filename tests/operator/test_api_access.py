"""A target that calls the Kubernetes API (its descriptor's `kube_rules`: execution, a Job per run)
gets a ServiceAccount, Role and RoleBinding from the operator, and the Role is enough: execution's
Kubernetes backend, run with that account's token, creates, follows and deletes its Jobs, while
anything outside its rules is refused. Against the real API server (no kubelet: the test writes what
the Job controller and the kubelet would, through the status subresources)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from coder.runner import registry
from coder.services.execution.config import ExecutionSettings
from coder.services.execution.kube import JOB_LABEL, KubeRunner, name_of
from coder.services.execution.sandbox import RunSpec
from coder.services.execution.worker import _runner
from coder.tests.operator.conftest import Cluster
from coder.tests.services.execution.test_kube import (
    LIMITS,
    Cancel,
    cancelled_while_running,
    created,
    job_status,
)
from coder.tests.support.kube import ControlPlane
from coder.tests.support.platform import wait_until

APPS, CORE, RBAC = "apps/v1", "v1", "rbac.authorization.k8s.io/v1"
ACCOUNT = "coder-execution"


@contextlib.contextmanager
def kubeconfig_of(cp: ControlPlane, token: str) -> Iterator[str]:
    """The admin kubeconfig with its user swapped for a bearer token."""
    config = yaml.safe_load(cp.run_kubectl("config", "view", "--raw").stdout)
    config["users"] = [{"name": "account", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "account"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        yield str(path)


def can_i(cluster: Cluster, kubeconfig: str, verb: str, resource: str) -> bool:
    """`kubectl auth can-i` (a SelfSubjectAccessReview) for `resource`, `pods/log` as a subresource."""
    resource, _, sub = resource.partition("/")
    flags = [f"--subresource={sub}"] if sub else []
    answer = cluster.cp.run_kubectl(
        "--kubeconfig",
        kubeconfig,
        "-n",
        cluster.namespace,
        "auth",
        "can-i",
        verb,
        resource,
        *flags,
        check=False,
    )
    return answer.stdout.strip() == "yes"


async def test_execution_gets_an_account_with_exactly_its_rules_and_its_settings(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    children = await cluster.children()
    declared = [rule.manifest() for rule in registry.descriptors()["execution"].kube_rules]
    assert children[(RBAC, "Role", ACCOUNT)]["rules"] == declared
    binding = children[(RBAC, "RoleBinding", ACCOUNT)]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT}
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", ACCOUNT, cluster.namespace)
    ]
    assert (CORE, "ServiceAccount", ACCOUNT) in children
    pod = children[(APPS, "Deployment", ACCOUNT)]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (ACCOUNT, True)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["EXECUTION_BACKEND"], env["EXECUTION_KUBE_NAMESPACE"]) == ("kubernetes", cluster.namespace)
    # The others run without a token.
    gateway = children[(APPS, "Deployment", "coder-gateway")]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False
    assert gateway.get("serviceAccountName") != ACCOUNT

    # Deleted by hand, the Role comes back as declared; a reconcile after that writes nothing more.
    cluster.kubectl("delete", "role", ACCOUNT)
    outcome = await cluster.reconcile()
    assert outcome.applied == [f"Role/{ACCOUNT}"]
    assert (await cluster.children())[(RBAC, "Role", ACCOUNT)]["rules"] == declared


async def test_the_role_is_enough_for_the_kube_backend_and_nothing_more(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    cluster.apply_cr()
    await cluster.bring_up()
    children = await cluster.children()
    deployment = children[(APPS, "Deployment", ACCOUNT)]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in deployment["containers"][0]["env"] if "value" in e}
    admin = cluster.kube.client
    namespace = cluster.namespace
    cluster.kubectl("create", "secret", "generic", "planted", "--from-literal=k=v")
    token = cluster.kubectl("create", "token", ACCOUNT, "--duration=1h").stdout.strip()

    with kubeconfig_of(cluster.cp, token) as kubeconfig:
        for rule in registry.descriptors()["execution"].kube_rules:
            for resource in rule.resources:
                kind, _, sub = resource.partition("/")
                qualified = (f"{kind}.{rule.api_group}" if rule.api_group else kind) + (
                    f"/{sub}" if sub else ""
                )
                for verb in rule.verbs:
                    assert can_i(cluster, kubeconfig, verb, qualified), (verb, qualified)
        for verb, resource in (
            ("get", "secrets"),
            ("list", "secrets"),
            ("create", "pods"),
            ("list", "jobs.batch"),
        ):
            assert not can_i(cluster, kubeconfig, verb, resource), (verb, resource)
        assert not can_i(cluster, kubeconfig, "create", "roles.rbac.authorization.k8s.io")

        client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
        try:
            with pytest.raises(ApiError) as refused:
                await client.get(Secret, "planted", namespace=namespace)
            assert refused.value.status.code == 403

            # The settings the operator gives the Deployment choose the Kubernetes backend there.
            for key, value in env.items():
                if key.startswith("EXECUTION_"):
                    monkeypatch.setenv(key, value)
            settings = ExecutionSettings(tick_seconds=0.05)
            assert settings.kube_namespace == namespace
            runner = _runner(settings)
            assert isinstance(runner, KubeRunner)
            runner._client = client  # in a pod its token comes from the mount; here from TokenRequest

            # A run with files and no network: policy, files and Job created, the first two patched to be
            # owned by the Job, the Job read until it ended, its pod listed and its exit code read.
            spec = RunSpec(
                job_id=str(uuid.uuid4()), argv=["python3", "main.py"], limits=LIMITS, files={"main.py": b"1"}
            )
            task = asyncio.create_task(runner.run(spec, Cancel()))
            job = await created(admin, namespace, spec)
            for made in (NetworkPolicy, ConfigMap):

                async def owned(made: Any = made) -> bool:
                    child = (await admin.get(made, name_of(spec), namespace=namespace)).to_dict()
                    owners = [ref["uid"] for ref in child["metadata"].get("ownerReferences") or []]
                    return bool(owners == [job["metadata"]["uid"]])

                await wait_until(owned, what=f"the {made.__name__} owned by the Job")
            await _pod_exited(admin, namespace, spec, code=3)
            await job_status(admin, namespace, name_of(spec), "Failed", "BackoffLimitExceeded")
            result = await asyncio.wait_for(task, 30)
            assert (result.outcome, result.exit_code, result.reason) == ("exited", 3, "exited with 3"), result

            # Cancelled while it runs: the Job is deleted with the account's `delete`.
            await cancelled_while_running(runner, admin, namespace)
        finally:
            await client.close()


async def _pod_exited(client: AsyncClient, namespace: str, spec: RunSpec, code: int) -> None:
    """The Job's pod, as the Job controller makes it and the kubelet ends it."""
    pod: dict[str, Any] = {
        "metadata": {
            "name": f"{name_of(spec)}-abcde",
            "namespace": namespace,
            "labels": {JOB_LABEL: spec.job_id},
        },
        "spec": {"containers": [{"name": "run", "image": "python:3.11-slim"}]},
    }
    await client.create(cast(Pod, Pod.from_dict(pod)))
    state = {"terminated": {"exitCode": code, "reason": "Error"}}
    status = {
        "containerStatuses": [
            {"name": "run", "image": "i", "imageID": "", "ready": False, "restartCount": 0, "state": state}
        ]
    }
    await client.patch(
        Pod.Status,
        pod["metadata"]["name"],
        {"status": status},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
