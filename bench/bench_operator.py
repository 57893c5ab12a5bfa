"""The operator against `kubectl apply --server-side` of the same objects, on one real API server.

Requests are counted by the API server itself: its audit log records every request with the
client's user agent (`coder-operator` for the reconciler's client, `kopf/...` for kopf's watch and
bookkeeping, `kubectl/...`), so both sides are measured the same way, retries and discovery included.

Measured:
- converge: a ten-line CoderPlatform until every child exists. The control plane has no kubelet,
  so the StatefulSet and Job readiness the operator waits for is written as soon as the objects
  appear (what the controllers would do once the pods run); the API time is the sum of the three
  reconciles that create the children, the requests are all of the operator's;
- kubectl: `kubectl apply --server-side` of the very objects the operator created (same manifests,
  another namespace), with an empty discovery cache (as on a fresh machine) and then again warm;
- idle: ten resyncs of the running operator (kopf and all) after convergence: API writes must be 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from coder.bench.support import Stopwatch, report, result
from coder.operator import builders, crd, names
from coder.operator.kube import Kube
from coder.operator.main import operate
from coder.operator.options import Options
from coder.operator.reconcile import observe, plain, read_referenced, reconcile
from coder.operator.spec import Owner, parse
from coder.tests.operator import controllers
from coder.tests.support.kube import ControlPlane

CR = """\
apiVersion: platform.coderide.io/v1alpha1
kind: CoderPlatform
metadata:
  name: coder
spec:
  version: "1.0.0"
"""
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
RESYNC = 0.5
IDLE_RESYNCS = 10

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}


class Audit:
    """Reads the API server's audit log from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    async def since_mark(self, agent: str) -> Counter[str]:
        """Requests (verb -> count) of clients whose user agent starts with `agent`."""
        await asyncio.sleep(0.3)  # the log backend writes when a response completes
        counts: Counter[str] = Counter()
        with self.path.open() as handle:
            handle.seek(self.offset)
            for line in handle:
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event.get("userAgent", "").startswith(agent):
                    counts[event["verb"]] += 1
        return counts


def total(counts: Counter[str]) -> int:
    return sum(counts.values())


def writes(counts: Counter[str]) -> int:
    return sum(n for verb, n in counts.items() if verb in WRITES)


def kubectl(cp: ControlPlane, env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    subprocess.run([cp.kubectl, *args], env=env, input=stdin, text=True, check=True, capture_output=True)


async def operator_converge(
    cp: ControlPlane, audit: Audit, namespace: str
) -> tuple[float, int, list[dict[str, Any]]]:
    """Reconcile passes (as the handlers run them) until every child exists; the API time and requests."""
    kube = Kube.from_kubeconfig(str(cp.kubeconfig))
    api_seconds = 0.0
    try:
        kubectl(cp, cp.env(), "-n", namespace, "apply", "--server-side", "-f", "-", stdin=CR)
        audit.mark()
        for stage in (controllers.statefulsets_become_ready, controllers.jobs_finish, None):
            body = await kube.platform(namespace, "coder")
            assert body is not None
            clock = Stopwatch()
            outcome = await reconcile(kube, body)
            if outcome.status_patch:
                await kube.patch_status(namespace, "coder", outcome.status_patch)
            api_seconds += clock.seconds
            if stage is not None:
                await stage(kube, namespace)  # the controllers' part, not the operator's
        requests = total(await audit.since_mark(names.FIELD_MANAGER))
        # The objects as the operator applied them, for kubectl to apply elsewhere.
        body = await kube.platform(namespace, "coder")
        assert body is not None
        spec = parse(plain(body)["spec"], Owner("coder", namespace, body["metadata"]["uid"]))
        children = await kube.children(namespace, "coder", body["metadata"]["uid"])
        observed, _ = observe(spec, children, await read_referenced(kube, spec), False)
        manifests = builders.desired(spec, observed, os.urandom)
        assert len(manifests) == len(children), (len(manifests), len(children))
        return api_seconds, requests, manifests
    finally:
        await kube.close()


def for_kubectl(manifests: list[dict[str, Any]], namespace: str) -> str:
    """The same objects in another namespace, without the owner (its uid does not exist there)."""
    docs = []
    for manifest in manifests:
        doc = json.loads(json.dumps(manifest))
        doc["metadata"]["namespace"] = namespace
        doc["metadata"].pop("ownerReferences", None)
        docs.append(doc)
    return yaml.safe_dump_all(docs)


async def kubectl_apply(cp: ControlPlane, audit: Audit, stdin: str, cache: str) -> tuple[float, int, int]:
    env = {**cp.env(), "KUBECACHEDIR": cache}
    audit.mark()
    clock = Stopwatch()
    kubectl(cp, env, "apply", "--server-side", "--field-manager=bench", "-f", "-", stdin=stdin)
    seconds = clock.seconds
    counts = await audit.since_mark("kubectl/")
    return seconds, total(counts), writes(counts)


async def idle_resyncs(cp: ControlPlane, audit: Audit, namespace: str) -> tuple[Counter[str], Counter[str]]:
    """The real operator (kopf in a thread) over a converged platform: requests during ten resyncs."""
    options = Options(namespaces=(namespace,), resync_seconds=RESYNC, kubeconfig=str(cp.kubeconfig))
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(operate(options, stop_flag=stop, ready_flag=ready)))
    thread.start()
    try:
        ready.wait(30)
        await asyncio.sleep(4 * RESYNC)  # kopf's resume handler and a first resync
        audit.mark()
        await asyncio.sleep(IDLE_RESYNCS * RESYNC + 0.1)
        return await audit.since_mark(names.FIELD_MANAGER), await audit.since_mark("kopf/")
    finally:
        stop.set()
        thread.join(30)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        policy = Path(tmp) / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        log = Path(tmp) / "audit.log"
        cp = ControlPlane(
            extra_apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={log}",
                "--audit-log-maxsize=0",
            ]
        )
        with cp:
            audit = Audit(log)
            env = cp.env()
            kubectl(cp, env, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(crd.crd_manifest()))
            kubectl(cp, env, "wait", "--for=condition=Established", f"crd/{names.CRD_NAME}")
            kubectl(cp, env, "create", "namespace", "op")
            kubectl(cp, env, "create", "namespace", "plain")

            op_seconds, op_requests, manifests = await operator_converge(cp, audit, "op")
            stdin = for_kubectl(manifests, "plain")
            cold = await kubectl_apply(cp, audit, stdin, str(Path(tmp) / "kubectl-cache"))
            warm = await kubectl_apply(cp, audit, stdin, str(Path(tmp) / "kubectl-cache"))
            ours, kopf = await idle_resyncs(cp, audit, "op")

    objects = len(manifests)
    report(
        f"converge a ten-line CoderPlatform: {objects} objects (API time; controllers' waits excluded)",
        [
            ("kubectl apply --server-side (cold cache)", cold[0] * 1000, "ms"),
            ("kubectl apply --server-side (warm cache)", warm[0] * 1000, "ms"),
            ("operator: 3 reconciles", op_seconds * 1000, "ms"),
        ],
        baseline="kubectl apply --server-side (cold cache)",
    )
    report(
        "API requests to create them",
        [
            ("kubectl apply --server-side (cold cache)", cold[1], "requests"),
            ("kubectl apply --server-side (warm cache)", warm[1], "requests"),
            ("operator: 3 reconciles", op_requests, "requests"),
        ],
        baseline="kubectl apply --server-side (cold cache)",
    )
    print(f"  operator: {op_requests / 3:.1f} requests per reconcile; kubectl: {cold[2]} writes per apply")
    idle_ours, idle_kopf = total(ours), total(kopf)
    passes = ours["get"]  # each resync reads its CoderPlatform once
    print(
        f"idle: {passes} resyncs in {IDLE_RESYNCS * RESYNC:.1f}s -> {idle_ours} requests by the reconciler "
        f"({idle_ours / max(passes, 1):.1f} per resync: {dict(ours)}), {idle_kopf} by kopf; API writes: "
        f"{writes(ours) + writes(kopf)} (kubectl re-applying the unchanged objects: {warm[2]} writes)"
    )
    if writes(ours) + writes(kopf):
        raise SystemExit("the operator wrote during idle resyncs")
    result("reconciles_time_vs_kubectl", op_seconds / cold[0], higher_is_better=False)
