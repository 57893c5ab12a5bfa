"""End-to-end check of the test control plane (tests/support/kube.py).

Starts real etcd + kube-apiserver + kube-controller-manager on loopback and
proves the API server version stamping, the deployment/replicaset controllers,
the garbage collector, the namespace controller, helm, and clean shutdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

# This project imports its code as `coder.*` (.pkg/coder -> repo root) and keeps the
# repo root off sys.path; `tests.support.kube` works where it is (python -m pytest).
try:
    from coder.tests.support.kube import ControlPlane, kube_control_plane
except ImportError:  # e.g. `python3 -m pytest --noconftest` outside the project venv
    from tests.support.kube import (  # type: ignore[assignment]
        ControlPlane,
        kube_control_plane,
    )

__all__ = ["kube_control_plane"]  # the session fixture, re-exported for pytest

T = TypeVar("T")

EXPECTED_KUBE_MINOR = "v1.36."
EXPECTED_HELM_MINOR = "v3.22."

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
"""


def wait_for(what: str, fn: Callable[[], T], timeout: float = 90.0, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.run_kubectl(*args, "-o", "json").stdout)


def test_server_version(kube_control_plane):
    cp = kube_control_plane
    out = subprocess.run(
        ["kubectl", "version", "-o", "json"],
        env=cp.env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    version = json.loads(out)
    assert version["serverVersion"]["gitVersion"].startswith(EXPECTED_KUBE_MINOR), version
    assert version["clientVersion"]["gitVersion"].startswith(EXPECTED_KUBE_MINOR), version
    assert (version["serverVersion"]["major"], version["serverVersion"]["minor"]) == ("1", "36")


def test_deployment_creates_replicaset_and_gc_deletes_it(kube_control_plane):
    cp = kube_control_plane
    ns = "kube-support-e2e"
    cp.run_kubectl("apply", "-f", "-", input=MANIFEST.format(ns=ns))
    deploy_uid = kubectl_json(cp, "-n", ns, "get", "deployment", "web")["metadata"]["uid"]

    def owned_replicasets():
        items = kubectl_json(cp, "-n", ns, "get", "replicasets")["items"]
        return [
            rs
            for rs in items
            if any(
                ref.get("kind") == "Deployment" and ref.get("uid") == deploy_uid and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]

    rs = wait_for("deployment controller to create a ReplicaSet", owned_replicasets)
    assert len(rs) == 1 and rs[0]["spec"]["replicas"] == 1

    # serviceaccount controller: every namespace gets a 'default' ServiceAccount.
    wait_for(
        "default ServiceAccount",
        lambda: cp.run_kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode == 0,
    )

    cp.run_kubectl("-n", ns, "delete", "deployment", "web", "--cascade=background", "--wait=false")
    wait_for(
        "garbage collector to delete the ReplicaSet",
        lambda: kubectl_json(cp, "-n", ns, "get", "replicasets")["items"] == [],
    )

    # namespace controller: finalizes and removes the namespace.
    cp.run_kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        "namespace controller to remove the namespace",
        lambda: cp.run_kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=120,
    )


def test_helm_version(kube_control_plane):
    cp = kube_control_plane
    out = subprocess.run(
        [cp.helm, "version", "--template", "{{.Version}}"],
        env=cp.env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert out.startswith(EXPECTED_HELM_MINOR), out
    # helm talks to the same cluster through KUBECONFIG.
    ls = subprocess.run(
        [cp.helm, "list", "-A", "-o", "json"],
        env=cp.env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert json.loads(ls) == []


def test_standalone_start_stop_cleans_up():
    """A second, independent control plane (with kube-scheduler) starts and, on
    stop(), leaves no process and no temp dir behind."""
    with ControlPlane(scheduler=True) as cp:
        pids = cp.pids
        tmpdir = cp.tmpdir
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        assert cp.run_kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        for pid in pids.values():
            os.kill(pid, 0)  # alive
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert tmpdir is not None
    assert not tmpdir.exists()
