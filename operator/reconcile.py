"""One reconcile of one CoderPlatform: read, compare, write only the differences, report.

Level-triggered and idempotent: the same function runs on create, update, resume and on every
resync, and it only ever looks at the spec and at what exists now. Nothing it needs is kept in
memory between runs, so an operator restarted halfway simply converges on the next run.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import secrets
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightkube import ApiError

from coder.operator import builders, diff, names, status
from coder.operator.kube import Key, Kube, key_of, place_of
from coder.operator.spec import InvalidSpec, Owner, PlatformSpec, parse

log = logging.getLogger("coder.operator")
# Writes in flight at once during a reconcile: fast on a big first apply, gentle on the API server.
WRITE_CONCURRENCY = 8


@dataclass
class Outcome:
    """What a reconcile did and what the handler should still do (patch status, post events)."""

    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[status.Event] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Children the API server refused, as "Kind/name: its message"; the others are still applied.
    refused: list[str] = field(default_factory=list)
    # Set when a child had to be deleted to be recreated (an immutable field changed): the next
    # run, once the deletion went through, creates it again.
    retry: str | None = None

    def add(self, other: Outcome) -> None:
        self.applied += other.applied
        self.deleted += other.deleted
        self.refused += other.refused
        self.retry = self.retry or other.retry


def plain(value: Any) -> Any:
    """A deep copy of a (kopf or lightkube) mapping as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _decoded(data: Mapping[str, str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


# --------------------------------------------------------------------------- observing


async def read_referenced(kube: Kube, spec: PlatformSpec) -> dict[str, dict[str, str]]:
    """The user Secrets the pods read (absent from the result when missing)."""
    wanted = sorted(builders.referenced_secrets(spec))
    found = await asyncio.gather(*(kube.secret(spec.owner.namespace, name) for name in wanted))
    return {name: data for name, data in zip(wanted, found, strict=True) if data is not None}


def observe(
    spec: PlatformSpec,
    children: Mapping[Key, Mapping[str, Any]],
    referenced: Mapping[str, Mapping[str, str]],
    service_monitors: bool,
) -> tuple[builders.Observed, status.Observation]:
    """Pure: the facts the desired state and the status depend on, from what was read."""
    seen = status.Observation()
    for store in spec.data_stores.values():
        if store.name not in spec.needs:
            continue
        if store.external is not None:
            ref = store.external
            data = referenced.get(ref.name)
            if data is None:
                seen.dependencies.append(
                    status.Dependency(store.name, "external", False, f"Secret {ref.name} not found", True)
                )
            elif ref.key not in data:
                seen.dependencies.append(
                    status.Dependency(
                        store.name, "external", False, f"Secret {ref.name} has no key {ref.key}", True
                    )
                )
            else:
                seen.dependencies.append(status.Dependency(store.name, "external", True))
            continue
        sts = children.get(("apps/v1", "StatefulSet", builders.child(spec, store.name)))
        ready = (sts or {}).get("status", {}).get("readyReplicas", 0) >= 1
        message = "" if ready else f"StatefulSet {builders.child(spec, store.name)} has no ready replica"
        seen.dependencies.append(status.Dependency(store.name, "managed", ready, message))

    if spec.auth.oidc is not None:
        ref = spec.auth.oidc.client_secret
        if ref.key not in referenced.get(ref.name, {}):
            seen.missing_secrets.append(
                f"Secret {ref.name} with key {ref.key} (OIDC client secret) not found"
            )
    for target in spec.workloads.values():
        for item in target.env:
            env_ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if (
                env_ref
                and not env_ref.get("optional")
                and env_ref["key"] not in referenced.get(env_ref["name"], {})
            ):
                seen.missing_secrets.append(
                    f"Secret {env_ref['name']} with key {env_ref['key']} (env {item['name']}) not found"
                )

    postgres = next((d for d in seen.dependencies if d.name == "postgres"), None)
    postgres_ready = postgres is not None and postgres.ready
    job = builders.migration_job(spec)
    if job is None:
        seen.migration = status.MigrationState(None, "NotNeeded")
    else:
        job_name = job["metadata"]["name"]
        actual_job = children.get(("batch/v1", "Job", job_name))
        if actual_job is None and not postgres_ready:
            seen.migration = status.MigrationState(job_name, "WaitingForDatabase", "waiting for PostgreSQL")
        else:
            state, message = status.job_state(actual_job)
            seen.migration = status.MigrationState(
                job_name, "Running" if state == "Pending" else state, message
            )

    generated = {key[2]: _decoded(obj.get("data")) for key, obj in children.items() if key[1] == "Secret"}
    deployed = {}
    for name in spec.workloads:
        deployment = children.get(("apps/v1", "Deployment", builders.child(spec, name)))
        image = status.image_of(deployment) if deployment else None
        if image:
            deployed[name] = image
    observed = builders.Observed(
        generated=generated,
        referenced=referenced,
        deployed_images=deployed,
        migration_succeeded=seen.migration.state == "Succeeded",
        postgres_ready=postgres_ready,
        service_monitors=service_monitors,
    )
    return observed, seen


# --------------------------------------------------------------------------- writing


def _owns_replicas(deployment: Mapping[str, Any]) -> bool:
    return any(
        entry.get("manager") == names.FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in deployment["metadata"].get("managedFields") or []
    )


def _replicas_only(manifest: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    meta = manifest["metadata"]
    return {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


def describe(manifest: Mapping[str, Any], home: str) -> str:
    """`Kind/name`, and where it is when that is not `home` (the CoderPlatform's namespace)."""
    meta = manifest["metadata"]
    where = meta.get("namespace")
    return f"{manifest['kind']}/{meta['name']}" + (f" in {where}" if where and where != home else "")


def _replaceable(manifest: Mapping[str, Any]) -> bool:
    # Never a Secret: it holds generated keys, and it has no list another manager could add to.
    return bool(manifest["kind"] != "Secret")


def _immutable(exc: ApiError) -> bool:
    message = exc.status.message or ""
    return exc.status.code == 422 and ("immutable" in message or "Forbidden: updates to" in message)


async def _apply_one(
    kube: Kube, spec: PlatformSpec, manifest: builders.Manifest, current: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """Apply one child; None when it had to be deleted first (an immutable field changed)."""
    autoscaled = manifest["kind"] == "Deployment" and "replicas" not in manifest["spec"]
    if autoscaled and current is not None and _owns_replicas(current):
        # Hand `replicas` to a manager of its own first: dropping it from the operator's apply
        # would otherwise reset it to 1 under the autoscaler.
        await kube.apply(
            _replicas_only(manifest, current["spec"]["replicas"]), manager=names.REPLICAS_HANDOVER_MANAGER
        )
    try:
        try:
            result = await kube.apply(manifest)
        except ApiError as exc:
            # A hand edit can make the merge invalid (a port renumbered by hand keeps its name, so the
            # desired port beside it is a duplicate): replacing the object is the way out.
            if current is None or exc.status.code != 422 or _immutable(exc) or not _replaceable(manifest):
                raise
            log.info("%s: %s; replacing it", key_of(manifest), exc.status.message)
            result = await kube.replace(manifest)
        if current is not None and _replaceable(manifest) and not diff.contains(result, manifest):
            # Still not as desired: entries another field manager added to a list the operator owns.
            log.info("%s: entries added by another field manager; replacing it", key_of(manifest))
            result = await kube.replace(manifest)
    except ApiError as exc:
        if current is None or not _immutable(exc):
            raise
        log.info("%s: %s; deleting it to recreate it", key_of(manifest), exc.status.message)
        await kube.delete(key_of(manifest), manifest["metadata"].get("namespace"))
        return None
    if autoscaled and current is None:
        # A new autoscaled Deployment starts at the autoscaler's minimum, owned by the handover manager.
        workload = spec.workloads[manifest["metadata"]["labels"][names.COMPONENT_LABEL]]
        if workload.autoscaling.min_replicas != result["spec"].get("replicas"):
            replicas = _replicas_only(manifest, workload.autoscaling.min_replicas)
            result = await kube.apply(replicas, manager=names.REPLICAS_HANDOVER_MANAGER)
    return result


K = TypeVar("K", bound=Hashable)


async def converge(
    kube: Kube,
    spec: PlatformSpec,
    wanted: list[builders.Manifest],
    children: dict[K, dict[str, Any]],
    key: Callable[[Mapping[str, Any]], K] = key_of,  # type: ignore[assignment]  # K is Key by default
) -> Outcome:
    """Apply what differs, delete what is no longer wanted; `children` is updated to the result.

    Writes go out concurrently (a few at a time): the API server does not need them in order,
    pods that start before their ConfigMap exists simply wait for it. `children` is keyed by `key`:
    the name in the platform's namespace, or the whole place (`place_of`) for the sandbox's objects.
    """
    outcome = Outcome()
    home = spec.owner.namespace
    hashed = [diff.with_spec_hash(manifest) for manifest in wanted]
    keep = {key(manifest) for manifest in hashed}
    changed = [m for m in hashed if diff.needs_apply(m, children.get(key(m)))]
    stale = [k for k in children if k not in keep]
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def apply(manifest: builders.Manifest) -> dict[str, Any] | ApiError | None:
        async with gate:
            try:
                return await _apply_one(kube, spec, manifest, children.get(key(manifest)))
            except ApiError as exc:  # refused: reported, and the other children still go out
                return exc

    async def delete(k: K) -> ApiError | None:
        current = children[k]
        async with gate:
            try:
                await kube.delete(key_of(current), current["metadata"].get("namespace"))
            except ApiError as exc:
                return exc
            return None

    results = await asyncio.gather(*(apply(m) for m in changed))
    failed_deletes = await asyncio.gather(*(delete(k) for k in stale))
    for manifest, result in zip(changed, results, strict=True):
        k, what = key(manifest), describe(manifest, home)
        if isinstance(result, ApiError):
            message = f"{what}: {result.status.message or result.status.reason}"
            log.warning("%s/%s: the API server refused %s", home, spec.owner.name, message)
            outcome.refused.append(message)
        elif result is None:
            children.pop(k, None)
            outcome.deleted.append(what)
            outcome.retry = f"{what} is recreated (an immutable field changed)"
        else:
            children[k] = result
            outcome.applied.append(what)
    for k, error in zip(stale, failed_deletes, strict=True):
        what = describe(children[k], home)
        if error is not None:
            outcome.refused.append(f"{what}: {error.status.message or error.status.reason}")
            continue
        del children[k]
        outcome.deleted.append(what)
    return outcome


async def converge_sandbox(kube: Kube, spec: PlatformSpec) -> Outcome:
    """The sandbox namespace and what is in it (builders.sandbox), found by their labels. A missing
    namespace is created (with a create, which never takes over one made meanwhile); an existing one
    the operator did not make is left as it is, only the objects go in it. Objects of an earlier
    sandbox namespace, and that namespace if the operator made it, are deleted."""
    found = await kube.sandbox(spec.owner.namespace, spec.owner.name)
    wanted = builders.sandbox(spec)
    outcome = Outcome()
    if not wanted or place_of(wanted[0]) in found:
        current = found.get(place_of(wanted[0])) if wanted else None
    else:
        namespace, current = wanted[0], await kube.namespace(spec.sandbox.namespace)
        if current is None:
            try:
                current = found[place_of(namespace)] = await kube.create(diff.with_spec_hash(namespace))
                outcome.applied.append(describe(namespace, spec.owner.namespace))
            except ApiError as exc:
                if exc.status.code != 409:
                    raise
                current = await kube.namespace(spec.sandbox.namespace)
        if current is not None and place_of(current) not in found:
            other = _sandbox_owner(current)
            if other is not None:
                # Another CoderPlatform's: its removal would delete this one's Jobs with it.
                message = (
                    f"Namespace/{spec.sandbox.namespace}: the sandbox of CoderPlatform {other}; give this "
                    "one a spec.sandbox.namespace of its own"
                )
                log.warning("%s/%s: %s", spec.owner.namespace, spec.owner.name, message)
                return Outcome(refused=[message])
            wanted.remove(namespace)  # not the operator's: its labels are left alone
    if current is not None and current["metadata"].get("deletionTimestamp"):
        # Nothing can be created in it until it is gone; then it is made again.
        return Outcome(
            retry=f"Namespace/{spec.sandbox.namespace} is being deleted; it is made again once gone"
        )
    converged = await converge(kube, spec, wanted, found, key=place_of)
    converged.add(outcome)
    return converged


def _sandbox_owner(namespace: Mapping[str, Any]) -> str | None:
    """`namespace/name` of the CoderPlatform whose sandbox this Namespace is (the operator made it)."""
    labels = namespace["metadata"].get("labels") or {}
    if labels.get(names.MANAGED_BY_LABEL) != names.MANAGED_BY or names.OWNER_NAMESPACE_LABEL not in labels:
        return None
    return f"{labels[names.OWNER_NAMESPACE_LABEL]}/{labels.get(names.INSTANCE_LABEL)}"


async def remove_sandbox(kube: Kube, namespace: str, name: str) -> list[str]:
    """Delete what a CoderPlatform that is gone had outside its namespace (its Namespace only if the
    operator made it); its children in its namespace go with it (owner references)."""
    found = await kube.sandbox(namespace, name)
    gone = []
    for obj in sorted(found.values(), key=lambda obj: obj["kind"] == "Namespace"):
        await kube.delete(key_of(obj), obj["metadata"].get("namespace"))
        gone.append(describe(obj, namespace))
    if gone:
        log.info("%s/%s is gone: deleted %s", namespace, name, ", ".join(gone))
    return gone


# --------------------------------------------------------------------------- the reconcile


async def reconcile(
    kube: Kube,
    body: Mapping[str, Any],
    *,
    rand: builders.RandomBytes = secrets.token_bytes,
    now: str | None = None,
) -> Outcome:
    body = plain(body)
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"], int(meta.get("generation", 1)))
    previous: dict[str, Any] = body.get("status") or {}
    now = now or utc_now()
    try:
        spec = parse(body.get("spec") or {}, owner)
    except InvalidSpec as exc:
        return _invalid(owner, previous, str(exc), now)

    monitors = await kube.service_monitors_served(owner.namespace)
    children = await kube.children(owner.namespace, owner.name, owner.uid, monitors=monitors)
    referenced = await read_referenced(kube, spec)
    observed, _ = observe(spec, children, referenced, monitors)
    if spec.paused:
        outcome = Outcome()
    else:
        outcome = await converge(kube, spec, builders.desired(spec, observed, rand), children)
        outcome.add(await converge_sandbox(kube, spec))
        _report_writes(owner, outcome)
    # The status describes the children as they are after the writes.
    _, seen = observe(spec, children, referenced, monitors)
    seen.refused = outcome.refused
    if _pods_worth_reading(spec, children, seen):
        seen.pod_failures = status.pod_failures(await kube.pods(owner.namespace, owner.name))
    new = status.compute(spec, children, seen, previous, now)
    outcome.status_patch = status.status_patch(new, previous)
    outcome.events += status.transition_events(new["conditions"], previous.get("conditions") or [])
    return outcome


def _pods_worth_reading(spec: PlatformSpec, children: Mapping[Key, Any], seen: status.Observation) -> bool:
    """Pods are read only while something waits for them: a running migration, unready targets."""
    if seen.migration.state == "Running":
        return True
    rows = status.target_rows(spec, children)
    return any("replicas" in row and row["readyReplicas"] < row["replicas"] for row in rows)


def _report_writes(owner: Owner, outcome: Outcome) -> None:
    """A log line and an Event naming what a reconcile wrote (nothing when it wrote nothing)."""
    summary = [
        f"{verb} {len(items)}: {', '.join(items)}"
        for verb, items in (("applied", outcome.applied), ("deleted", outcome.deleted))
        if items
    ]
    if summary:
        log.info("%s/%s: %s", owner.namespace, owner.name, "; ".join(summary))
        outcome.events.append(status.Event("Normal", "Reconciled", "; ".join(summary)[:1000]))


def _invalid(owner: Owner, previous: Mapping[str, Any], message: str, now: str) -> Outcome:
    conditions = [
        status.Condition("Ready", False, "InvalidSpec", message),
        status.Condition("Degraded", True, "InvalidSpec", message),
    ]
    kept = [c for c in previous.get("conditions") or [] if c.get("type") not in ("Ready", "Degraded")]
    rendered = status.render_conditions(conditions, previous.get("conditions") or [], owner.generation, now)
    new = {
        **previous,
        "observedGeneration": owner.generation,
        "phase": "Degraded",
        "conditions": rendered + kept,
    }
    return Outcome(
        status_patch=status.status_patch(new, previous),
        events=status.transition_events(rendered, previous.get("conditions") or []),
    )
