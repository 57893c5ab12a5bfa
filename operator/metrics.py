"""The operator's own Prometheus metrics: reconciles (by how they ended), their duration, errors.

A registry of its own, so the operator's endpoint shows these and nothing of the platform's.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "coder_operator_reconciles",
    "Reconciles of a CoderPlatform, by trigger (change, child, resync) and result (ok, retry, error).",
    ["trigger", "result"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "coder_operator_reconcile_duration_seconds",
    "How long one reconcile of a CoderPlatform took (reads, writes, status).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
ERRORS = Counter(
    "coder_operator_reconcile_errors",
    "Reconciles that raised (retried on the next trigger or resync).",
    registry=REGISTRY,
)
REFUSED = Counter(
    "coder_operator_refused_children",
    "Children the API server refused to apply (reported as Degraded=ChildRefused).",
    ["kind"],
    registry=REGISTRY,
)


def serve(port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:  # noqa: S104
    """Serve /metrics on `port` (a thread of its own); `server.shutdown()` stops it."""
    return start_http_server(port, addr, registry=REGISTRY)
