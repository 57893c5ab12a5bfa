"""Operator tests run against a real kube-apiserver (with the garbage collector, Deployment and
ReplicaSet controllers of a real kube-controller-manager): one control plane per test session,
the CRD installed once, a fresh namespace per test, removed afterwards.

There is no kubelet and no StatefulSet or Job controller, so nothing ever runs: where the operator
waits for readiness, `Cluster` writes the status those controllers would write (through the same
status subresources), and says so in the name of each helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from lightkube.core.decoders import decode_list
from lightkube.resources.apps_v1 import Deployment

from coder.operator import crd, names
from coder.operator.kube import CHILD_KINDS, Key, Kube, ServiceMonitor
from coder.operator.main import operate
from coder.operator.options import Options
from coder.operator.reconcile import Outcome, reconcile
from coder.runner import registry
from coder.tests.operator import controllers
from coder.tests.support.kube import ControlPlane, kube_control_plane

__all__ = ["kube_control_plane"]

TEN_LINE_CR = """\
apiVersion: platform.coderide.io/v1alpha1
kind: CoderPlatform
metadata:
  name: coder
spec:
  version: "1.0.0"
"""


def expected_children(enabled: list[str] | None = None) -> set[tuple[str, str]]:
    """Every child of the ten-line CR with these targets on, derived from the registry (not a copy)."""
    targets = registry.descriptors()
    enabled = list(targets) if enabled is None else enabled
    stores = set().union(*(targets[name].needs for name in enabled))
    out = {("ConfigMap", "coder-config")}
    # A target's generated keys (its descriptor's `generated_secrets`) outlive it: they unlock its data.
    out |= {("Secret", f"coder-{name}-keys") for name, target in targets.items() if target.generated_secrets}
    for name in enabled:
        out |= {
            ("Deployment", f"coder-{name}"),
            ("Service", f"coder-{name}"),
            ("NetworkPolicy", f"coder-{name}"),
        }
        if targets[name].kube_rules:  # a target calling the Kubernetes API: its account (its Role is
            out.add(("ServiceAccount", f"coder-{name}"))  # in the sandbox namespace)
    for store in stores:
        out |= {
            ("StatefulSet", f"coder-{store}"),
            ("Service", f"coder-{store}"),
            ("Secret", f"coder-{store}"),
            ("NetworkPolicy", f"coder-{store}"),
        }
    return out


def kinds_and_names(children: dict[Key, Any]) -> set[tuple[str, str]]:
    """(kind, name) of each child but the migration Job, whose name is a hash."""
    return {(kind, name) for _, kind, name in children if kind != "Job"}


@pytest.fixture(scope="session")
def cluster_with_crd(kube_control_plane: ControlPlane) -> ControlPlane:
    cp = kube_control_plane
    cp.run_kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd.crd_manifest()))
    # Polled rather than `kubectl wait`, which fails outright while the new CRD has no status yet.
    deadline = time.monotonic() + 60
    while True:
        found = json.loads(cp.run_kubectl("get", "crd", names.CRD_NAME, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in (found.get("status") or {}).get("conditions") or []}
        if conditions.get("Established") == "True":
            return cp
        assert time.monotonic() < deadline, f"CRD not established: {conditions}"
        time.sleep(0.2)


@dataclass
class Cluster:
    """One test's namespace on the shared control plane, with the helpers the tests share."""

    cp: ControlPlane
    namespace: str
    kube: Kube

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return self.cp.run_kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply_cr(self, manifest: str = TEN_LINE_CR) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=manifest)

    def patch_cr(self, patch: dict[str, Any], name: str = "coder") -> None:
        self.kubectl("patch", "coderplatform", name, "--type=merge", "-p", json.dumps(patch))

    async def cr(self, name: str = "coder") -> dict[str, Any]:
        body = await self.kube.platform(self.namespace, name)
        assert body is not None, f"{name} is gone"
        return body

    async def reconcile(self, name: str = "coder") -> Outcome:
        """What the kopf handlers do, without kopf: reconcile, then patch the changed status."""
        outcome = await reconcile(self.kube, await self.cr(name))
        if outcome.status_patch:
            await self.kube.patch_status(self.namespace, name, outcome.status_patch)
        return outcome

    async def children(self, name: str = "coder") -> dict[Key, dict[str, Any]]:
        body = await self.cr(name)
        return await self.kube.children(self.namespace, name, body["metadata"]["uid"])

    @property
    def sandbox_namespace(self) -> str:
        return f"{self.namespace}-sandbox"

    async def sandbox(self, name: str = "coder") -> dict[tuple[str, str, str], dict[str, Any]]:
        """What the CoderPlatform has outside its namespace, by (kind, namespace, name)."""
        found = await self.kube.sandbox(self.namespace, name)
        return {(kind, namespace, item): obj for (_, kind, namespace, item), obj in found.items()}

    async def versions(self, name: str = "coder") -> dict[Key, str]:
        return {key: obj["metadata"]["resourceVersion"] for key, obj in (await self.children(name)).items()}

    # ---- the controllers (and kubelet) this control plane does not run: see controllers.py

    async def statefulsets_become_ready(self) -> None:
        await controllers.statefulsets_become_ready(self.kube, self.namespace)

    async def jobs_finish(self, *, succeeded: bool = True) -> list[str]:
        return await controllers.jobs_finish(self.kube, self.namespace, succeeded=succeeded)

    async def pods_become_ready(self) -> int:
        return await controllers.pods_become_ready(self.kube, self.namespace)

    async def deployments_settled(self) -> bool:
        """Whether the Deployment controller has caught up with every Deployment's spec: the current
        generation observed and its new pods created (they stay Pending: there is no kubelet)."""
        async for d in self.kube.client.list(Deployment, namespace=self.namespace):
            status, generation = d.status, (d.metadata.generation if d.metadata else None)
            if status is None or (status.observedGeneration or 0) < (generation or 0):
                return False
            wanted = d.spec.replicas if d.spec is not None and d.spec.replicas is not None else 1
            # Not status.replicas: mid-rollout the old pods stay too, since none ever becomes ready.
            if (status.updatedReplicas or 0) < wanted:
                return False
        return True

    async def settle(self, name: str = "coder") -> None:
        """Wait until the controllers are done with the children: a resourceVersion comparison must see
        the operator's writes only, not the Deployment controller still updating status."""
        await eventually("the Deployment controller to settle", self.deployments_settled)
        previous = await self.versions(name)
        deadline = time.monotonic() + 30
        while True:
            await asyncio.sleep(1.0)
            current = await self.versions(name)
            if current == previous:
                return
            assert time.monotonic() < deadline, "the children kept changing"
            previous = current

    async def bring_up(self, name: str = "coder") -> Outcome:
        """Reconcile through the data stores and the migration to the Deployments."""
        await self.reconcile(name)
        await self.statefulsets_become_ready()
        await self.reconcile(name)  # creates the migration Job
        await self.jobs_finish()
        return await self.reconcile(name)  # creates the Deployments


@pytest.fixture
async def cluster(cluster_with_crd: ControlPlane) -> AsyncIterator[Cluster]:
    cp = cluster_with_crd
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    cp.run_kubectl("create", "namespace", namespace)
    kube = Kube.from_kubeconfig(str(cp.kubeconfig))
    try:
        yield Cluster(cp, namespace, kube)
    finally:
        await kube.close()
        cp.run_kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        # The sandbox namespaces the operator made for it (it removes them itself only while it runs).
        owned = f"{names.OWNER_NAMESPACE_LABEL}={namespace}"
        cp.run_kubectl("delete", "namespace", "-l", owned, "--wait=false", check=False)


async def eventually(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _compile_list_decoders() -> None:
    """Decode an empty list of every kind the operator lists, here, before its thread starts.

    msgspec builds a type's decoder on first use; two threads building the same one at once (the
    operator listing children while the test does) crashed the interpreter with a segfault.
    """
    for kind in (*CHILD_KINDS, ServiceMonitor):
        decode_list(b'{"metadata": {}, "items": []}', kind)


@contextlib.contextmanager
def running_operator(
    kubeconfig: str,
    namespace: str,
    *,
    resync: float = 1.0,
    kube_factory: Callable[[], Kube] | None = None,
    leader_election: bool = False,
    ready: threading.Event | None = None,
    metrics_port: int | None = None,
) -> Iterator[Options]:
    """The real kopf operator, in a thread with its own event loop, until the block ends.

    With `ready` given, the block starts without waiting for it (a standby replica never is).
    """
    options = Options(
        namespaces=(namespace,),
        resync_seconds=resync,
        kubeconfig=kubeconfig,
        kube_factory=kube_factory,
        leader_election=leader_election,
        metrics_port=metrics_port,
        lease_namespace=namespace,
        lease_timing=(4, 1.0, 0.5),
    )
    wait = ready is None
    stop, ready = threading.Event(), ready or threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(operate(options, stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # surfaced in the test's thread below
            errors.append(exc)

    _compile_list_decoders()
    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    try:
        if wait and not ready.wait(30):
            raise AssertionError(f"operator did not start: {errors}")
        yield options
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "operator did not stop"
    if errors:
        raise errors[0]
