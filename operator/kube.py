"""The operator's few Kubernetes API calls, on lightkube's async client.

Why lightkube: it is async on httpx, typed (resource classes with their API paths), speaks
server-side apply natively, reads kubeconfig and in-cluster credentials, and is maintained. The
reconciler works on plain dicts (what the builders return); this module turns them into calls.
Every HTTP request is counted, so tests and the benchmark can assert on reads and writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient, KubeConfig
from lightkube.core.resource import GlobalResource, NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import (
    ConfigMap,
    Namespace,
    Pod,
    ResourceQuota,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.events_v1 import Event
from lightkube.resources.networking_v1 import Ingress, NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import CascadeType, PatchType

from coder.operator import names

CoderPlatform = create_namespaced_resource(names.GROUP, names.VERSION, names.KIND, names.PLURAL)
ServiceMonitor = create_namespaced_resource(
    "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"
)

# Every kind the operator creates, in the order children are best applied (what pods read first).
CHILD_KINDS: tuple[type[NamespacedResource], ...] = (
    ConfigMap,
    Secret,
    Service,
    StatefulSet,
    Job,
    ServiceAccount,
    Role,
    RoleBinding,
    Deployment,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    NetworkPolicy,
    Ingress,
)
# What it makes in the sandbox namespace (builders.sandbox), found by labels (no owner reference
# crosses namespaces): the Namespace itself first, the others in any namespace.
SANDBOX_KINDS: tuple[type[NamespacedResource] | type[GlobalResource], ...] = (
    Namespace,
    NetworkPolicy,
    ResourceQuota,
    Role,
    RoleBinding,
)
# Resource classes by (apiVersion, kind): namespaced or not, which lightkube's overloads tell apart.
_BY_KIND: dict[tuple[str, str], Any] = {
    (f"{r._api_info.resource.api_version}", r._api_info.resource.kind): r
    for r in (*CHILD_KINDS, *SANDBOX_KINDS, ServiceMonitor)
}
Key = tuple[str, str, str]  # apiVersion, kind, name
# An object anywhere: apiVersion, kind, namespace ("" for a cluster-scoped one), name.
Place = tuple[str, str, str, str]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# How long a "ServiceMonitor is not served" answer is trusted before asking again.
DISCOVERY_TTL = 300.0


def key_of(manifest: Mapping[str, Any]) -> Key:
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]


def place_of(manifest: Mapping[str, Any]) -> Place:
    meta = manifest["metadata"]
    return manifest["apiVersion"], manifest["kind"], meta.get("namespace") or "", meta["name"]


@dataclass
class RequestLog:
    """Requests sent, by method; `writes` is what must stay zero while nothing changes."""

    methods: Counter[str] = field(default_factory=Counter)
    paths: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.methods.values())

    @property
    def writes(self) -> int:
        return sum(n for method, n in self.methods.items() if method in WRITE_METHODS)

    def write_paths(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.paths if m in WRITE_METHODS]

    def reset(self) -> None:
        self.methods.clear()
        self.paths.clear()


class Kube:
    """The calls the reconciler makes, on one lightkube client."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.requests = RequestLog()
        self._monitors: tuple[float, bool] = (0.0, False)  # (valid until, served)
        # lightkube keeps its httpx client private; an event hook is the least intrusive way to
        # see every request it sends (retries and all).
        http: httpx2.AsyncClient = client._client._client
        http.event_hooks["request"].append(self._count)
        http.headers["User-Agent"] = names.FIELD_MANAGER

    @classmethod
    def from_kubeconfig(cls, path: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (`path` or $KUBECONFIG)."""
        config = KubeConfig.from_file(path) if path else None
        return cls(AsyncClient(config=config, field_manager=names.FIELD_MANAGER, timeout=httpx2.Timeout(30)))

    async def _count(self, request: httpx2.Request) -> None:
        self.requests.methods[request.method] += 1
        self.requests.paths.append((request.method, request.url.path))

    async def close(self) -> None:
        await self.client.close()

    # ---- reads

    async def platform(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A CoderPlatform as stored now (None once it is gone)."""
        try:
            obj = await self.client.get(CoderPlatform, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return dict(obj)  # a generic resource is the JSON object itself

    async def platforms(self, namespaces: tuple[str, ...]) -> list[tuple[str, str]]:
        """(namespace, name) of every CoderPlatform in these namespaces (all when empty)."""
        found = []
        for namespace in namespaces or (ALL_NS,):
            async for obj in self.client.list(CoderPlatform, namespace=namespace):
                meta = obj["metadata"]
                found.append((meta["namespace"], meta["name"]))
        return found

    async def children(
        self, namespace: str, instance: str, uid: str, *, monitors: bool = False
    ) -> dict[Key, dict[str, Any]]:
        """Every child of one CoderPlatform: listed by its labels, kept if it names it as controller."""
        kinds: list[type[NamespacedResource]] = list(CHILD_KINDS)
        if monitors:
            kinds.append(ServiceMonitor)
        labels = names.instance_labels(instance)
        lists = await asyncio.gather(*(self._list(kind, namespace, labels) for kind in kinds))
        found: dict[Key, dict[str, Any]] = {}
        for items in lists:
            for item in items:
                refs = item["metadata"].get("ownerReferences", [])
                if any(ref.get("uid") == uid and ref.get("controller") for ref in refs):
                    found[key_of(item)] = item
        return found

    async def sandbox(self, namespace: str, instance: str) -> dict[Place, dict[str, Any]]:
        """What one CoderPlatform made outside its namespace (builders.sandbox), by its labels."""
        labels = names.sandbox_labels(namespace, instance)
        lists = await asyncio.gather(*(self._list(kind, ALL_NS, labels) for kind in SANDBOX_KINDS))
        return {place_of(item): item for items in lists for item in items}

    async def sandbox_owners(self) -> set[tuple[str, str]]:
        """(namespace, name) of every CoderPlatform something outside its namespace is labelled with."""
        labels = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.OWNER_NAMESPACE_LABEL: None}
        lists = await asyncio.gather(*(self._list(kind, ALL_NS, labels) for kind in SANDBOX_KINDS))
        owners = set()
        for items in lists:
            for item in items:
                labelled = item["metadata"]["labels"]
                owners.add((labelled[names.OWNER_NAMESPACE_LABEL], labelled.get(names.INSTANCE_LABEL, "")))
        return owners

    async def _list(
        self,
        kind: type[NamespacedResource] | type[GlobalResource],
        namespace: str,
        labels: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        info = kind._api_info.resource
        items = []
        listed = (
            self.client.list(kind, namespace=namespace, labels=dict(labels))
            if issubclass(kind, NamespacedResource)
            else self.client.list(kind, labels=dict(labels))
        )
        async for obj in listed:
            item: dict[str, Any] = obj.to_dict()  # type: ignore[union-attr]  # every resource has it
            # List items come without apiVersion and kind.
            item.update(apiVersion=info.api_version, kind=info.kind)
            items.append(item)
        return items

    async def service_monitors_served(self, namespace: str) -> bool:
        """Whether the Prometheus Operator's ServiceMonitor kind exists (asked again every few minutes)."""
        valid_until, served = self._monitors
        if time.monotonic() < valid_until:
            return served
        served = True
        try:
            async for _ in self.client.list(ServiceMonitor, namespace=namespace, chunk_size=1):
                break
        except httpx2.HTTPStatusError as exc:
            # An unknown API group is a bare 404 page, not a Status object (so not an ApiError).
            if exc.response.status_code != 404:
                raise
            served = False
        self._monitors = (time.monotonic() + DISCOVERY_TTL, served)
        return served

    async def namespace(self, name: str) -> dict[str, Any] | None:
        """A Namespace as stored now (None when there is none)."""
        try:
            obj = await self.client.get(Namespace, name)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        found: dict[str, Any] = obj.to_dict()
        found.update(apiVersion="v1", kind="Namespace")
        return found

    async def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64, as stored), or None when it does not exist."""
        try:
            obj = await self.client.get(Secret, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return dict(obj.data or {})

    # ---- writes

    async def apply(
        self, manifest: Mapping[str, Any], *, manager: str = names.FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply, forced: the operator's fields are the operator's, even after a hand edit."""
        kind = _BY_KIND[(manifest["apiVersion"], manifest["kind"])]
        meta = manifest["metadata"]
        result = await self.client.patch(
            kind,
            meta["name"],
            dict(manifest),
            namespace=meta.get("namespace"),
            patch_type=PatchType.APPLY,
            field_manager=manager,
            force=True,
        )
        applied: dict[str, Any] = result.to_dict()
        applied.update(apiVersion=manifest["apiVersion"], kind=manifest["kind"])
        return applied

    async def replace(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Overwrite a child with `manifest` (an HTTP PUT), then apply it: for drift apply cannot undo.

        Server-side apply merges lists keyed by name or port: an entry another field manager added
        (a port, a sidecar, an env var, a volume) stays beside the operator's. The PUT writes the
        desired object whole (the API server keeps what it allocated, such as a Service's clusterIP)
        and clears every manager's claims; the apply that follows makes the operator the owner of
        its fields again, so a field it later drops is removed. Foreign labels and annotations
        (maps, harmless) are kept, and so are the replicas of a Deployment an autoscaler scales.
        """
        kind = _BY_KIND[(manifest["apiVersion"], manifest["kind"])]
        meta = dict(manifest["metadata"])
        # Read fresh: controllers update status all the time, and the PUT must name the latest version.
        current = (await self.client.get(kind, meta["name"], namespace=meta["namespace"])).to_dict()
        have = current["metadata"]
        meta["resourceVersion"] = have["resourceVersion"]
        meta["labels"] = {**(have.get("labels") or {}), **(meta.get("labels") or {})}
        meta["annotations"] = {**(have.get("annotations") or {}), **(meta.get("annotations") or {})}
        meta["managedFields"] = [{}]  # the documented way to clear every manager's claims
        body = {**manifest, "metadata": meta}
        if manifest["kind"] == "Deployment" and "replicas" not in manifest["spec"]:
            body["spec"] = {**manifest["spec"], "replicas": current["spec"].get("replicas", 1)}
        obj = kind.from_dict(body)
        await self.client.replace(obj, meta["name"], namespace=meta["namespace"])
        return await self.apply(manifest)

    async def pods(self, namespace: str, instance: str) -> list[dict[str, Any]]:
        """The pods of one CoderPlatform's workloads (their templates carry its selector labels)."""
        labels: dict[str, Any] = {names.NAME_LABEL: names.APP_NAME, names.INSTANCE_LABEL: instance}
        return [pod.to_dict() async for pod in self.client.list(Pod, namespace=namespace, labels=labels)]

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object that must not exist yet (ApiError 409 if it does): never takes one over."""
        kind = _BY_KIND[(manifest["apiVersion"], manifest["kind"])]
        result = await self.client.create(kind.from_dict(dict(manifest)))
        created: dict[str, Any] = result.to_dict()
        created.update(apiVersion=manifest["apiVersion"], kind=manifest["kind"])
        return created

    async def delete(self, key: Key, namespace: str | None) -> None:
        """Delete a child (`namespace` None for a cluster-scoped object); one already gone is no error."""
        api_version, kind, name = key
        resource = _BY_KIND[(api_version, kind)]
        # A StatefulSet recreated over an immutable change adopts its running pods and volumes.
        cascade = CascadeType.ORPHAN if kind == "StatefulSet" else CascadeType.BACKGROUND
        try:
            await self.client.delete(resource, name, namespace=namespace, cascade=cascade)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def post_event(self, regarding: Mapping[str, Any], type_: str, reason: str, note: str) -> None:
        """An events.k8s.io/v1 Event about a CoderPlatform (what `kubectl describe` lists)."""
        meta = regarding["metadata"]
        event = {
            # Named like kubectl's Events: the object's name and a hex timestamp.
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": meta["namespace"]},
            "eventTime": dt.datetime.now(dt.UTC),
            "reportingController": f"{names.GROUP}/{names.FIELD_MANAGER}",
            "reportingInstance": socket.gethostname()[:128],
            "action": "Reconcile",
            "type": type_,
            "reason": reason,
            "note": note[:1024],
            "regarding": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
        }
        await self.client.create(cast(Event, Event.from_dict(event)))

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self.client.patch(
            CoderPlatform.Status,
            name,
            {"status": dict(status)},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
