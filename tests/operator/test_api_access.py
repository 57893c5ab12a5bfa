"""A target that calls the Kubernetes API (its descriptor's `kube_rules`: execution, a Job per run)
gets a ServiceAccount in the platform's namespace and, from the operator, a sandbox namespace of the
platform's own (Pod Security `restricted`, deny-all) with a Role of exactly those rules bound to the
account there, and none in the platform's namespace. The Role is enough: execution's Kubernetes
backend, run with that account's token and the Deployment's settings, creates, follows and deletes its
Jobs in the sandbox, while anything outside its rules, and everything in the platform's namespace, is
refused. What the platform has in the sandbox is found and removed by labels (no owner reference
crosses namespaces). Against the real API server (no kubelet: the test writes what the Job controller
and the kubelet would, through the status subresources)."""

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
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from coder.operator import names
from coder.runner import registry
from coder.services.execution import kube
from coder.services.execution.config import ExecutionSettings
from coder.services.execution.kube import JOB_LABEL, KubeRunner, name_of
from coder.services.execution.sandbox import RunSpec
from coder.services.execution.worker import _runner
from coder.shared.target import KubeRule
from coder.tests.operator.conftest import TEN_LINE_CR, Cluster, eventually, running_operator
from coder.tests.operator.test_reconcile import condition
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


def can_i(cluster: Cluster, kubeconfig: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` (a SelfSubjectAccessReview) for `resource`, `pods/log` as a subresource."""
    resource, _, sub = resource.partition("/")
    flags = [f"--subresource={sub}"] if sub else []
    answer = cluster.cp.run_kubectl(
        "--kubeconfig", kubeconfig, "-n", namespace, "auth", "can-i", verb, resource, *flags, check=False
    )
    return answer.stdout.strip() == "yes"


def qualified(rule: KubeRule, resource: str) -> str:
    kind, _, sub = resource.partition("/")
    return (f"{kind}.{rule.api_group}" if rule.api_group else kind) + (f"/{sub}" if sub else "")


async def test_execution_gets_an_account_and_a_role_only_in_its_sandbox(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    children = await cluster.children()
    sandbox = cluster.sandbox_namespace
    # In the platform's namespace: the account, and no Role of any target.
    assert (CORE, "ServiceAccount", ACCOUNT) in children
    assert not {kind for _, kind, _ in children} & {"Role", "RoleBinding"}
    pod = children[(APPS, "Deployment", ACCOUNT)]["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (ACCOUNT, True)
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["EXECUTION_BACKEND"], env["EXECUTION_KUBE_NAMESPACE"]) == ("kubernetes", sandbox)
    # The others run without a token.
    gateway = children[(APPS, "Deployment", "coder-gateway")]["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False
    assert gateway.get("serviceAccountName") != ACCOUNT

    # In the sandbox namespace, which the operator created: the Role, its binding, a deny-all policy.
    made = await cluster.sandbox()
    assert set(made) == {
        ("Namespace", "", sandbox),
        ("Role", sandbox, ACCOUNT),
        ("RoleBinding", sandbox, ACCOUNT),
        ("NetworkPolicy", sandbox, "coder-deny-all"),
    }
    labels = made[("Namespace", "", sandbox)]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels[names.OWNER_NAMESPACE_LABEL] == cluster.namespace
    declared = [rule.manifest() for rule in registry.descriptors()["execution"].kube_rules]
    assert made[("Role", sandbox, ACCOUNT)]["rules"] == declared
    binding = made[("RoleBinding", sandbox, ACCOUNT)]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT}
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", ACCOUNT, cluster.namespace)
    ]
    deny = made[("NetworkPolicy", sandbox, "coder-deny-all")]["spec"]
    assert (deny["podSelector"], deny["policyTypes"]) == ({}, ["Ingress", "Egress"])
    # Pod Security is enforced there: a pod without the restricted security context is refused.
    refused = cluster.cp.run_kubectl(
        "-n", sandbox, "run", "loose", "--image=busybox", "--restart=Never", check=False
    )
    assert refused.returncode != 0 and 'violates PodSecurity "restricted' in refused.stderr, refused.stderr

    # Deleted by hand, the Role comes back as declared; a reconcile after that writes nothing more.
    cluster.cp.run_kubectl("-n", sandbox, "delete", "role", ACCOUNT)
    outcome = await cluster.reconcile()
    assert outcome.applied == [f"Role/{ACCOUNT} in {sandbox}"]
    assert (await cluster.sandbox())[("Role", sandbox, ACCOUNT)]["rules"] == declared
    cluster.kube.requests.reset()
    await cluster.reconcile()
    # (The status may still follow the Deployment controller.)
    assert [p for p in cluster.kube.requests.write_paths() if not p[1].endswith("/status")] == []


async def test_the_role_is_enough_for_the_kube_backend_in_the_sandbox_and_nothing_more(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    cluster.apply_cr()
    await cluster.bring_up()
    children = await cluster.children()
    deployment = children[(APPS, "Deployment", ACCOUNT)]["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in deployment["containers"][0]["env"] if "value" in e}
    admin = cluster.kube.client
    home, sandbox = cluster.namespace, cluster.sandbox_namespace
    cluster.kubectl("create", "secret", "generic", "planted", "--from-literal=k=v")
    token = cluster.kubectl("create", "token", ACCOUNT, "--duration=1h").stdout.strip()

    with kubeconfig_of(cluster.cp, token) as kubeconfig:
        for rule in registry.descriptors()["execution"].kube_rules:
            for resource in rule.resources:
                for verb in rule.verbs:
                    assert can_i(cluster, kubeconfig, verb, qualified(rule, resource), sandbox), (
                        verb,
                        resource,
                    )
                    # None of it in the platform's namespace, whose Secrets a pod there could mount.
                    assert not can_i(cluster, kubeconfig, verb, qualified(rule, resource), home), (
                        verb,
                        resource,
                    )
        for namespace in (home, sandbox):
            for verb, resource in (
                ("get", "secrets"),
                ("list", "secrets"),
                ("create", "secrets"),
                ("create", "pods"),
                ("list", "jobs.batch"),
                ("create", "roles.rbac.authorization.k8s.io"),
            ):
                assert not can_i(cluster, kubeconfig, verb, resource, namespace), (verb, resource, namespace)

        client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
        try:
            with pytest.raises(ApiError) as refused:
                await client.get(Secret, "planted", namespace=home)
            assert refused.value.status.code == 403
            elsewhere = RunSpec(job_id=str(uuid.uuid4()), argv=["true"], limits=LIMITS)
            with pytest.raises(ApiError) as refused:
                await client.create(
                    cast(Job, Job.from_dict(kube.job(elsewhere, home, "python:3.11-slim", 60)))
                )
            assert refused.value.status.code == 403

            # The settings the operator gives the Deployment choose the Kubernetes backend and the sandbox.
            for key, value in env.items():
                if key.startswith("EXECUTION_"):
                    monkeypatch.setenv(key, value)
            settings = ExecutionSettings(tick_seconds=0.05)
            assert settings.kube_namespace == sandbox
            runner = _runner(settings)
            assert isinstance(runner, KubeRunner)
            runner._client = client  # in a pod its token comes from the mount; here from TokenRequest

            # A run with files and no network: policy, files and Job created in the sandbox, the first two
            # patched to be owned by the Job, the Job read until it ended, its pod listed, its exit code read.
            spec = RunSpec(
                job_id=str(uuid.uuid4()), argv=["python3", "main.py"], limits=LIMITS, files={"main.py": b"1"}
            )
            task = asyncio.create_task(runner.run(spec, Cancel()))
            job = await created(admin, sandbox, spec)
            for made in (NetworkPolicy, ConfigMap):

                async def owned(made: Any = made) -> bool:
                    child = (await admin.get(made, name_of(spec), namespace=sandbox)).to_dict()
                    owners = [ref["uid"] for ref in child["metadata"].get("ownerReferences") or []]
                    return bool(owners == [job["metadata"]["uid"]])

                await wait_until(owned, what=f"the {made.__name__} owned by the Job")
            # Its pod, from the Job's own template: admitted under the sandbox's Pod Security `restricted`.
            await _pod_exited(admin, sandbox, spec, job["spec"]["template"], code=3)
            await job_status(admin, sandbox, name_of(spec), "Failed", "BackoffLimitExceeded")
            result = await asyncio.wait_for(task, 30)
            assert (result.outcome, result.exit_code, result.reason) == ("exited", 3, "exited with 3"), result

            # Cancelled while it runs: the Job is deleted with the account's `delete`.
            await cancelled_while_running(runner, admin, sandbox)
        finally:
            await client.close()


async def test_an_existing_namespace_is_used_as_is_and_never_deleted(cluster: Cluster):
    """A sandbox namespace the user made gets the operator's objects, never its labels, and survives
    them; one the operator made goes when nothing needs it any more."""
    theirs = f"{cluster.namespace}-jobs"
    cluster.cp.run_kubectl("create", "namespace", theirs)
    try:
        cluster.apply_cr(TEN_LINE_CR + f"  sandbox: {{namespace: {theirs}}}\n")
        await cluster.reconcile()
        made = await cluster.sandbox()
        assert set(made) == {
            ("Role", theirs, ACCOUNT),
            ("RoleBinding", theirs, ACCOUNT),
            ("NetworkPolicy", theirs, "coder-deny-all"),
        }
        labels = (await cluster.kube.namespace(theirs) or {})["metadata"]["labels"]
        assert (
            names.OWNER_NAMESPACE_LABEL not in labels and "pod-security.kubernetes.io/enforce" not in labels
        )

        # Back to the default: the objects leave the user's namespace, which stays; the operator's is made.
        cluster.patch_cr({"spec": {"sandbox": {"namespace": None}}})
        outcome = await cluster.reconcile()
        sandbox = cluster.sandbox_namespace
        assert f"Role/{ACCOUNT} in {theirs}" in outcome.deleted
        assert {(kind, where) for kind, where, _ in await cluster.sandbox()} == {
            ("Namespace", ""),
            ("Role", sandbox),
            ("RoleBinding", sandbox),
            ("NetworkPolicy", sandbox),
        }
        assert await cluster.kube.namespace(theirs) is not None
        assert (
            cluster.cp.run_kubectl(
                "-n", theirs, "get", "roles,rolebindings,networkpolicies", "-o", "name"
            ).stdout
            == ""
        )

        # No target calling the API any more: the operator's namespace is deleted with what is in it.
        cluster.patch_cr({"spec": {"targets": {"execution": {"enabled": False}}}})
        outcome = await cluster.reconcile()
        assert f"Namespace/{sandbox}" in outcome.deleted
        # Back on at once: nothing can be made in a namespace being deleted, so it waits for it to go.
        cluster.patch_cr({"spec": {"targets": {"execution": {"enabled": True}}}})
        outcome = await cluster.reconcile()
        if outcome.retry is not None:  # (unless the namespace controller was quicker)
            assert outcome.retry.startswith(f"Namespace/{sandbox} is being deleted"), outcome.retry
            assert [a for a in outcome.applied if sandbox in a] == [] and not outcome.refused
            await eventually("the sandbox namespace to be gone", lambda: _gone(cluster, sandbox), timeout=60)
            outcome = await cluster.reconcile()
        assert outcome.retry is None and f"Namespace/{sandbox}" in outcome.applied
        assert ("Role", sandbox, ACCOUNT) in await cluster.sandbox()
        assert await cluster.kube.namespace(theirs) is not None
    finally:
        cluster.cp.run_kubectl("delete", "namespace", theirs, "--wait=false", check=False)


async def _gone(cluster: Cluster, namespace: str) -> bool:
    return await cluster.kube.namespace(namespace) is None


async def test_the_sandbox_goes_with_the_platform_also_when_the_operator_was_away(cluster: Cluster):
    kubeconfig, sandbox = str(cluster.cp.kubeconfig), cluster.sandbox_namespace

    async def role() -> bool:
        return ("Role", sandbox, ACCOUNT) in await cluster.sandbox()

    # No resync in this block (an hour away): what happens is the handlers' doing.
    with running_operator(kubeconfig, cluster.namespace, resync=3600):
        cluster.apply_cr()
        await eventually("the Role in the sandbox", role)
        # The platform deleted: the operator sees it go and removes what it had in the sandbox.
        cluster.kubectl("delete", "coderplatform", "coder", "--timeout=30s")
        await eventually("the sandbox's objects to go", lambda: _nothing_left(cluster), timeout=30)
        await eventually("the sandbox namespace to be gone", lambda: _gone(cluster, sandbox), timeout=60)

    # Made again without the operator, then the platform deleted while it is away: no finalizer holds
    # the deletion, and the operator's next resync sweeps what was left.
    cluster.apply_cr()
    await cluster.reconcile()
    assert await role()
    cluster.kubectl("delete", "coderplatform", "coder", "--timeout=30s")
    assert await role()
    with running_operator(kubeconfig, cluster.namespace, resync=0.5):
        await eventually("the sweep of what was left", lambda: _nothing_left(cluster), timeout=30)
        await eventually("the sandbox namespace to be gone", lambda: _gone(cluster, sandbox), timeout=60)


async def _nothing_left(cluster: Cluster) -> bool:
    left = await cluster.kube.sandbox(cluster.namespace, "coder")
    # The namespace may still be terminating (the namespace controller empties it first).
    return all(
        obj["kind"] == "Namespace" and obj["metadata"].get("deletionTimestamp") for obj in left.values()
    )


async def _pod_exited(
    client: AsyncClient, namespace: str, spec: RunSpec, template: dict[str, Any], code: int
) -> None:
    """The Job's pod, as the Job controller makes it from the template and the kubelet ends it."""
    pod: dict[str, Any] = {
        "metadata": {
            "name": f"{name_of(spec)}-abcde",
            "namespace": namespace,
            "labels": {**template["metadata"]["labels"], JOB_LABEL: spec.job_id},
        },
        "spec": template["spec"],
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


async def test_a_second_platform_may_not_share_the_first_ones_sandbox(cluster: Cluster):
    """Both in one namespace, both on the default sandbox namespace: the first one's, whose removal
    would take the second one's Jobs with it. The second is told, and puts nothing there."""
    cluster.apply_cr()
    await cluster.reconcile()
    cluster.apply_cr(TEN_LINE_CR.replace("name: coder", "name: second"))
    outcome = await cluster.reconcile("second")
    sandbox = cluster.sandbox_namespace
    assert [r.split(":")[0] for r in outcome.refused] == [f"Namespace/{sandbox}"]
    assert f"the sandbox of CoderPlatform {cluster.namespace}/coder" in outcome.refused[0]
    assert await cluster.sandbox("second") == {}
    degraded = condition(await cluster.cr("second"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildRefused")
    assert "spec.sandbox.namespace" in degraded["message"]

    # A namespace of its own: the second's objects go there, the first one's stay where they were.
    cluster.patch_cr({"spec": {"sandbox": {"namespace": f"{cluster.namespace}-second"}}}, name="second")
    outcome = await cluster.reconcile("second")
    assert not outcome.refused
    assert ("Namespace", "", f"{cluster.namespace}-second") in await cluster.sandbox("second")
    assert ("Namespace", "", sandbox) in await cluster.sandbox()
    assert condition(await cluster.cr("second"), "Degraded")["status"] == "False"
