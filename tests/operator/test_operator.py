"""The operator as it runs: kopf in-process (its own thread and loop), against the real API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import threading
import time
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from coder.operator import deploy, names
from coder.operator.kube import Kube
from coder.tests.operator.conftest import (
    Cluster,
    eventually,
    expected_children,
    kinds_and_names,
    running_operator,
)

RESYNC = 0.5


class Recorder:
    """Builds the operator's client and keeps it, so the test can read its request log."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.kube: Kube | None = None

    def __call__(self) -> Kube:
        self.kube = Kube.from_kubeconfig(self.kubeconfig)
        return self.kube


class StallingKube(Kube):
    """A client whose writes hang after the first few: an operator killed in the middle of a reconcile."""

    def __init__(self, kubeconfig: str, writes: int) -> None:
        base = Kube.from_kubeconfig(kubeconfig)
        super().__init__(base.client)
        self.left = writes
        # Set once a write hangs (the operator may run on a loop of its own: a thread-safe flag).
        self.stalled = threading.Event()

    async def apply(self, manifest: Any, **kwargs: Any) -> dict[str, Any]:
        if self.left <= 0:
            self.stalled.set()
            await asyncio.Event().wait()  # never returns; the operator is stopped meanwhile
        self.left -= 1
        return await super().apply(manifest, **kwargs)


async def converge_with_fake_controllers(cluster: Cluster, *, exact: bool = True) -> None:
    """Wait for each stage the operator gates, playing the controllers this cluster lacks."""

    async def has(kind: str) -> bool:
        return any(k == kind for _, k, _ in await cluster.children())

    await eventually("StatefulSets", lambda: has("StatefulSet"))
    await cluster.statefulsets_become_ready()
    await eventually("the migration Job", lambda: has("Job"))
    await cluster.jobs_finish()

    async def complete() -> bool:
        have, want = kinds_and_names(await cluster.children()), expected_children()
        return have == want if exact else have >= want

    await eventually("every child", complete)


def events(cluster: Cluster) -> list[dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"]["kind"] == names.KIND]


async def test_operator_converges_idles_restores_and_garbage_collection_cleans_up(cluster: Cluster):
    recorder = Recorder(str(cluster.cp.kubeconfig))
    with running_operator(
        str(cluster.cp.kubeconfig), cluster.namespace, resync=RESYNC, kube_factory=recorder
    ):
        cluster.apply_cr()
        await converge_with_fake_controllers(cluster)
        await cluster.settle()

        async def settled() -> bool:
            status = (await cluster.cr()).get("status", {})
            return status.get("version") == "1.0.0" and status.get("phase") == "Progressing"

        await eventually("the status to catch up", settled)
        assert recorder.kube is not None
        kube = recorder.kube

        async def a_quiet_resync() -> bool:
            """Two whole resyncs went by without a write: what converging left in flight is done."""
            kube.requests.reset()
            await eventually("two resyncs", lambda: kube.requests.methods["GET"] >= 15 * 2, timeout=30)
            return kube.requests.writes == 0

        await eventually("a resync that writes nothing", a_quiet_resync, timeout=60)

        # Idle: ten resyncs, and no write of any kind (children, status, annotations, Events).
        versions = await cluster.versions()
        cr_version = (await cluster.cr())["metadata"]["resourceVersion"]
        event_count = len(events(cluster))
        recorder.kube.requests.reset()
        # Ten resyncs (each lists every kind) ran: only then does "no write" say anything.
        await eventually("ten resyncs", lambda: kube.requests.methods["GET"] >= 15 * 10, timeout=60)
        assert recorder.kube.requests.writes == 0, recorder.kube.requests.write_paths()
        assert await cluster.versions() == versions
        assert (await cluster.cr())["metadata"]["resourceVersion"] == cr_version
        assert len(events(cluster)) == event_count

        # Drift: a deleted and an edited child come back on the next resync.
        cluster.kubectl("delete", "deployment", "coder-secrets")
        cluster.kubectl("scale", "deployment", "coder-gateway", "--replicas=7")

        async def restored() -> bool:
            children = await cluster.children()
            gateway = children.get(("apps/v1", "Deployment", "coder-gateway"))
            secrets_back = ("apps/v1", "Deployment", "coder-secrets") in children
            return secrets_back and gateway is not None and gateway["spec"]["replicas"] == 1

        await eventually("the children to be restored", restored)

        # Transitions and writes were posted as Events on the CoderPlatform.
        reasons = {e["reason"] for e in events(cluster)}
        assert {"Reconciled", "DependencyNotReady", "DependenciesReady", "MigrationSucceeded"} <= reasons

    # Deleting the CR: the garbage collector (kube-controller-manager) removes every child.
    uid = (await cluster.cr())["metadata"]["uid"]
    deleted = cluster.kubectl("delete", "coderplatform", "coder", "--timeout=30s", check=False)
    assert deleted.returncode == 0, deleted.stderr

    async def collected() -> bool:
        leftover = await cluster.kube.children(cluster.namespace, "coder", uid)
        return not leftover

    # The collector learns about a new kind on its 30-second discovery pass: allow for one.
    await eventually("garbage collection of every child", collected, timeout=90)
    # ...and, one level down, the ReplicaSets and pods of its Deployments.
    await eventually(
        "ReplicaSets and pods to go",
        lambda: cluster.kubectl("get", "pods,replicasets", "-o", "name").stdout == "",
    )


async def test_operator_restarted_mid_reconcile_converges(cluster: Cluster):
    kubeconfig = str(cluster.cp.kubeconfig)
    stalling: list[StallingKube] = []

    def stalling_kube() -> StallingKube:
        stalling.append(StallingKube(kubeconfig, writes=4))
        return stalling[-1]

    with running_operator(kubeconfig, cluster.namespace, resync=RESYNC, kube_factory=stalling_kube):
        cluster.apply_cr()
        # The fifth write hangs: the reconcile can go no further, so what is there now is final.
        await eventually(
            "the operator to stall mid-reconcile", lambda: any(k.stalled.is_set() for k in stalling)
        )
    # The operator is gone in the middle of its first reconcile: a partial set of children.
    assert len(await cluster.children()) == 4
    assert "status" not in await cluster.cr()

    with running_operator(kubeconfig, cluster.namespace, resync=RESYNC):
        await converge_with_fake_controllers(cluster)

        async def reported() -> bool:
            return (await cluster.cr()).get("status", {}).get("version") == "1.0.0"

        await eventually("the status", reported)


async def test_operator_works_with_its_own_least_privilege_rbac(cluster: Cluster):
    """The ServiceAccount, ClusterRole and binding of k8s/operator/ are enough for everything."""
    cp = cluster.cp
    documents = [
        deploy.namespace(),
        deploy.service_account(),
        deploy.cluster_role(),
        deploy.cluster_role_binding(),
    ]
    cp.run_kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(documents))
    try:
        token = cp.run_kubectl(
            "create", "token", deploy.NAME, "-n", deploy.NAMESPACE, "--duration=1h"
        ).stdout.strip()
        admin = yaml.safe_load(cp.run_kubectl("config", "view", "--raw").stdout)
        admin["users"] = [{"name": "operator", "user": {"token": token}}]
        admin["contexts"][0]["context"]["user"] = "operator"
        with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False) as handle:
            yaml.safe_dump(admin, handle)
        as_operator = handle.name
        assert (
            cp.run_kubectl(
                "--kubeconfig", as_operator, "auth", "can-i", "get", "pods", check=False
            ).stdout.strip()
            == "no"
        )

        cluster.kubectl("create", "secret", "generic", "oidc", "--from-literal=client-secret=s3cret")
        cluster.apply_cr(
            "apiVersion: platform.coderide.io/v1alpha1\nkind: CoderPlatform\nmetadata: {name: coder}\n"
            "spec:\n  version: '1.0.0'\n"
            "  auth: {oidc: {clientId: ide, clientSecretRef: {name: oidc}}}\n"
            "  ingress: {enabled: true, host: coder.example.com}\n"
            "  defaults: {autoscaling: {enabled: true, minReplicas: 2}}\n"
            "  sandbox: {quota: {pods: '20'}}\n"
        )
        with running_operator(as_operator, cluster.namespace, resync=RESYNC):
            await converge_with_fake_controllers(cluster, exact=False)
            children = await cluster.children()
            kinds = {kind for _, kind, _ in children}
            assert {"Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"} <= kinds

            async def status_written() -> bool:
                return (await cluster.cr()).get("status", {}).get("version") == "1.0.0"

            await eventually("the status", status_written)
            assert any(e["reason"] == "Reconciled" for e in events(cluster))
            # The sandbox namespace, made with what it has there (granting the Role's rules included).
            sandbox = {(kind, where) for kind, where, _ in await cluster.sandbox()}
            assert sandbox == {
                ("Namespace", ""),
                *((kind, cluster.sandbox_namespace) for kind in ("NetworkPolicy", "ResourceQuota")),
                *((kind, cluster.sandbox_namespace) for kind in ("Role", "RoleBinding")),
            }
            # ...and removed with the platform.
            cluster.kubectl("delete", "coderplatform", "coder", "--timeout=30s")

            async def removed() -> bool:
                left = await cluster.kube.sandbox(cluster.namespace, "coder")
                return all(obj["metadata"].get("deletionTimestamp") for obj in left.values())

            await eventually("the sandbox to be removed", removed)
    finally:
        cp.run_kubectl(
            "delete", "clusterrolebinding,clusterrole", deploy.NAME, "--ignore-not-found", check=False
        )
        cp.run_kubectl("delete", "namespace", deploy.NAMESPACE, "--wait=false", check=False)


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_watched_children_wake_the_reconcile_without_waiting_for_a_resync(cluster: Cluster):
    """No resync in this test (an hour away): every step is taken on news of a child."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with running_operator(str(cluster.cp.kubeconfig), cluster.namespace, resync=3600, metrics_port=port):
        before = await scrape(port)
        cluster.apply_cr()
        # Each stage moves on the status the stand-in controllers write on the StatefulSets and the Job.
        await converge_with_fake_controllers(cluster)

        start = time.monotonic()
        cluster.kubectl("delete", "deployment", "coder-secrets")

        async def back() -> bool:
            return ("apps/v1", "Deployment", "coder-secrets") in await cluster.children()

        await eventually("the deleted Deployment to come back", back, timeout=20)
        print(f"\nrestored a deleted Deployment in {time.monotonic() - start:.1f}s")

        cluster.kubectl(
            "patch",
            "service",
            "coder-gateway",
            "--type=json",
            "-p",
            json.dumps([{"op": "replace", "path": "/spec/ports/0/port", "value": 3999}]),
        )

        async def port_back() -> bool:
            service = (await cluster.children())[("v1", "Service", "coder-gateway")]
            return [p["port"] for p in service["spec"]["ports"]] != [3999] and len(
                service["spec"]["ports"]
            ) == 2

        await eventually("the hand-edited Service to be restored", port_back, timeout=20)

        # The operator's metrics (process-wide counters: compared with their values at the start).
        after = await scrape(port)

        def grew(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        woken = grew("coder_operator_reconciles_total", trigger="child", result="ok")
        assert woken >= 3  # every step above was woken by a child...
        assert (
            grew("coder_operator_reconciles_total", trigger="resync", result="ok") == 0
        )  # ...none by a resync
        assert grew("coder_operator_reconcile_duration_seconds_count") >= woken


async def test_two_replicas_one_leads_and_the_other_takes_over(cluster: Cluster):
    kubeconfig = str(cluster.cp.kubeconfig)
    first, second = Recorder(kubeconfig), Recorder(kubeconfig)
    first_ready, second_ready = threading.Event(), threading.Event()

    def holder() -> str | None:
        lease = cluster.kubectl("get", "lease", "coder-operator", "-o", "json", check=False)
        return json.loads(lease.stdout)["spec"].get("holderIdentity") if lease.returncode == 0 else None

    with contextlib.ExitStack() as first_replica, contextlib.ExitStack() as second_replica:
        first_replica.enter_context(
            running_operator(
                kubeconfig,
                cluster.namespace,
                resync=RESYNC,
                kube_factory=first,
                leader_election=True,
                ready=first_ready,
            )
        )
        await eventually("the first replica to lead", first_ready.is_set)
        leader = holder()
        assert leader
        second_replica.enter_context(
            running_operator(
                kubeconfig,
                cluster.namespace,
                resync=RESYNC,
                kube_factory=second,
                leader_election=True,
                ready=second_ready,
            )
        )
        cluster.apply_cr()

        async def has_children() -> bool:
            return bool(await cluster.children())

        await eventually("the leader's first reconcile", has_children)
        # The standby never started kopf: no client, no watch, no write; the Lease stays put.
        assert second.kube is None and not second_ready.is_set()
        assert holder() == leader

        # The leader stops cleanly and releases the Lease: the standby takes over and reconciles.
        first_replica.close()
        await eventually("the standby to take over", second_ready.is_set)
        assert holder() not in (None, leader)
        cluster.kubectl("delete", "configmap", "coder-config")

        async def back() -> bool:
            return ("v1", "ConfigMap", "coder-config") in await cluster.children()

        await eventually("the new leader to restore the ConfigMap", back)
