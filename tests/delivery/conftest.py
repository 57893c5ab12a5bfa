"""Helpers for the delivery tests: a private control plane per module, helm and kubectl against it,
the operator run in-process under a ServiceAccount's token, and the controllers this control plane
lacks (kubelet, StatefulSet and Job controllers) played by writing their status subresources.

Each test module starts its own ControlPlane (about 4 s) rather than sharing the session one:
installing the CRD with Helm needs a cluster where nobody else installed it another way.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from coder.operator import builders, names, spec
from coder.operator.main import operate
from coder.operator.options import Options
from coder.tests.support.kube import ControlPlane

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
OPERATOR_CHART = CHARTS / "coder-operator"
PLATFORM_CHART = CHARTS / "coder-platform"
SAMPLES = ("minimal", "production", "monolithic")
CHILD_KINDS = (
    "configmaps,secrets,services,statefulsets.apps,jobs.batch,deployments.apps,serviceaccounts,"
    "roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,"
    "horizontalpodautoscalers.autoscaling,poddisruptionbudgets.policy,"
    "networkpolicies.networking.k8s.io,ingresses.networking.k8s.io"
)
# What a production sample's Secrets hold here: only their existence matters to the operator.
EXTERNAL_SECRETS = {
    "coder-postgres": {"url": "postgresql://coder:pw@db.example.com:5432/coder"},
    "coder-redis": {"url": "redis://:pw@cache.example.com:6379/0"},
    "coder-rabbitmq": {"url": "amqp://coder:pw@mq.example.com:5672/"},
    "coder-oidc": {"client-secret": "s3cret"},
}


def log_command(args: list[str], proc: subprocess.CompletedProcess) -> None:
    """Commands and their output end up in the test log (`pytest -rA` / on failure)."""
    print(f"$ {' '.join(args)}\n{proc.stdout}{proc.stderr}")


@dataclass
class Cluster:
    cp: ControlPlane

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        proc = self.cp.run_kubectl(*args, input=input, check=False, timeout=120)
        log_command(["kubectl", *args], proc)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.cp.helm, *args], env=self.cp.env(), capture_output=True, text=True, timeout=300, check=False
        )
        log_command(["helm", *args], proc)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def get(self, *args: str) -> Any:
        return json.loads(self.cp.run_kubectl("get", *args, "-o", "json", timeout=60).stdout)

    def exists(self, *args: str) -> bool:
        return self.cp.run_kubectl("get", *args, check=False).returncode == 0

    def create_namespace(self, namespace: str) -> None:
        self.kubectl("create", "namespace", namespace)
        # Namespaced ServiceAccounts and tokens need the namespace's default one first.
        wait_for(f"namespace {namespace}", lambda: self.exists("-n", namespace, "serviceaccount", "default"))

    def dry_run(self, manifests: str) -> str:
        """Server-side validation of every object (schemas, CEL rules, admission), nothing stored."""
        return self.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=delivery-test",
            "-f",
            "-",
            input=manifests,
        ).stdout

    def wait_crd(self) -> None:
        # Polled rather than `kubectl wait`, which fails outright while the new CRD has no status yet.
        def established() -> bool:
            found = json.loads(self.kubectl("get", "crd", names.CRD_NAME, "-o", "json").stdout)
            conditions = (found.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_for(f"crd/{names.CRD_NAME} to be established", established, interval=0.2)

    def token_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount: what the operator's pod would use."""
        token = self.kubectl(
            "-n", namespace, "create", "token", service_account, "--duration=1h"
        ).stdout.strip()
        admin = yaml.safe_load(Path(str(self.cp.kubeconfig)).read_text())
        config = {
            **admin,
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [
                {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": service_account}}
            ],
            "current-context": "sa",
        }
        assert self.cp.tmpdir is not None
        path = self.cp.tmpdir / f"kubeconfig-{namespace}-{service_account}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # ---- the controllers and the kubelet this control plane does not run

    def _patch_status(self, namespace: str, kind: str, name: str, status: dict[str, Any]) -> None:
        self.kubectl(
            "-n",
            namespace,
            "patch",
            kind,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    def statefulsets_become_ready(self, namespace: str) -> list[str]:
        """What the StatefulSet controller writes once its pod is ready."""
        done = []
        for sts in self.get("-n", namespace, "statefulsets")["items"]:
            meta = sts["metadata"]
            self._patch_status(
                namespace,
                "statefulset",
                meta["name"],
                {
                    "replicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                    "currentReplicas": 1,
                    "updatedReplicas": 1,
                    "observedGeneration": meta["generation"],
                },
            )
            done.append(meta["name"])
        return done

    def jobs_succeed(self, namespace: str) -> list[str]:
        """What the Job controller writes when the migration pod exited 0."""
        t = utc_now()
        done = []
        for job in self.get("-n", namespace, "jobs")["items"]:
            if (job.get("status") or {}).get("succeeded"):
                continue
            conditions = [
                {"type": kind, "status": "True", "lastProbeTime": t, "lastTransitionTime": t}
                for kind in ("SuccessCriteriaMet", "Complete")
            ]
            status = {"startTime": t, "completionTime": t, "succeeded": 1, "conditions": conditions}
            self._patch_status(namespace, "job", job["metadata"]["name"], status)
            done.append(job["metadata"]["name"])
        return done

    def pods_become_ready(self, namespace: str) -> int:
        """What the kubelet writes when a container passes its readiness probe."""
        t = utc_now()
        count = 0
        for pod in self.get("-n", namespace, "pods")["items"]:
            if pod.get("status", {}).get("phase") == "Running":
                continue
            ready = [
                {"type": kind, "status": "True", "lastTransitionTime": t}
                for kind in ("Ready", "ContainersReady")
            ]
            self._patch_status(
                namespace, "pod", pod["metadata"]["name"], {"phase": "Running", "conditions": ready}
            )
            count += 1
        return count

    # ---- the platform as the operator built it

    def children(self, namespace: str, instance: str) -> dict[tuple[str, str], dict[str, Any]]:
        items = self.get("-n", namespace, CHILD_KINDS, "-l", names.instance_selector(instance))["items"]
        return {(item["kind"], item["metadata"]["name"]): item for item in items}

    def bring_up(self, namespace: str, name: str) -> None:
        """Play the missing controllers until the operator reports the platform converged: Ready, and
        no rollout in progress, both judged on the current spec generation (a Ready left over from
        before a change does not count)."""

        def step() -> bool:
            self.statefulsets_become_ready(namespace)
            self.jobs_succeed(namespace)
            self.pods_become_ready(namespace)
            body = self.get("-n", namespace, "coderplatform", name)
            generation = body["metadata"]["generation"]
            conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
            wanted = {"Ready": "True", "Progressing": "False"}
            return all(
                kind in conditions
                and conditions[kind]["status"] == status
                and conditions[kind].get("observedGeneration") == generation
                for kind, status in wanted.items()
            )

        wait_for(f"CoderPlatform {namespace}/{name} to converge", step, timeout=120, interval=1.0)
        self.kubectl(
            "-n", namespace, "wait", f"coderplatform/{name}", "--for=condition=Ready", "--timeout=30s"
        )


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    with ControlPlane() as cp:
        yield Cluster(cp)


@contextlib.contextmanager
def running_operator(kubeconfig: Path, namespaces: tuple[str, ...] = ()) -> Iterator[None]:
    """`coder-platform operator` in-process (kopf in a thread with its own loop) until the block ends."""
    options = Options(namespaces=namespaces, resync_seconds=1.0, kubeconfig=str(kubeconfig))
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(operate(options, stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    try:
        if not ready.wait(30):
            raise AssertionError(f"the operator did not start: {errors}")
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the operator did not stop"
    if errors:
        raise errors[0]


def expected_children(body: dict[str, Any]) -> set[tuple[str, str]]:
    """Kind and name of every child a converged platform has: the operator's own pure builders
    applied to the CoderPlatform as stored (so the chart's rendering, not a copy, is what counts)."""
    meta = body["metadata"]
    owner = spec.Owner(meta["name"], meta["namespace"], meta["uid"], meta.get("generation", 1))
    parsed = spec.parse(body["spec"], owner)
    observed = builders.Observed(migration_succeeded=True, postgres_ready=True)
    rng = random.Random(0)  # the values of generated secrets do not matter, their names do
    return {
        (child["kind"], child["metadata"]["name"])
        for child in builders.desired(parsed, observed, rng.randbytes)
    }


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
