"""How an operator process runs; read by the CLI, the kopf handlers and the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coder.operator.kube import Kube


@dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync_seconds: float = 30.0
    kubeconfig: str | None = None  # None: in-cluster credentials, else $KUBECONFIG or ~/.kube/config
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz
    metrics_port: int | None = None  # Prometheus /metrics (operator/metrics.py); None: not served
    # Reconcile only while holding the Lease `coder-operator` in `lease_namespace` (see leader.py).
    leader_election: bool = False
    lease_namespace: str = "default"
    # Seconds: a Lease not renewed for this long is taken over; renewal period; standby poll period.
    lease_timing: tuple[int, float, float] = (15, 5.0, 2.0)
    # Tests swap the client (e.g. for one that stalls mid-reconcile); None: `Kube.from_kubeconfig`.
    kube_factory: Callable[[], Kube] | None = None
