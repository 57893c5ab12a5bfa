"""The status of a CoderPlatform, computed (purely) from its spec and its children as observed.

Conditions follow `metav1.Condition`: a `lastTransitionTime` only moves when the status does, so a
resync that sees nothing new computes exactly the stored status and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coder.operator import builders, names
from coder.operator.spec import PlatformSpec

Children = Mapping[tuple[str, str, str], Mapping[str, Any]]

# Reasons that deserve a Warning event rather than a Normal one.
WARNING_REASONS = frozenset(
    {
        "MigrationFailed",
        "MissingSecret",
        "InvalidSpec",
        "ReplicaFailure",
        "ProgressDeadlineExceeded",
        "ChildRefused",
        "PodFailing",
        "MigrationPodFailing",
    }
)
# Why a container waits that will not go away by waiting: reported, not shown as progress.
FAILING_WAIT_REASONS = frozenset(
    {
        "InvalidImageName",
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class MigrationState:
    job: str | None  # None: no enabled target has tables, nothing to migrate
    state: str  # NotNeeded, WaitingForDatabase, Running, Succeeded, Failed
    message: str = ""


@dataclass(frozen=True)
class Dependency:
    name: str
    mode: str
    ready: bool
    message: str = ""
    missing_secret: bool = False


@dataclass
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Observation:
    """What reconcile saw, beyond the children: dependencies, migration, missing user Secrets."""

    dependencies: list[Dependency] = field(default_factory=list)
    migration: MigrationState = field(default_factory=lambda: MigrationState(None, "NotNeeded"))
    missing_secrets: list[str] = field(default_factory=list)
    # Children the API server refused ("Kind/name: message") on this reconcile.
    refused: list[str] = field(default_factory=list)
    # Failing pods of the operator's own workloads, by component (e.g. "migrate"): one line each.
    pod_failures: dict[str, list[str]] = field(default_factory=dict)


def pod_failures(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """What a kubelet or the scheduler reports as stuck, per component (its label), one line a pod."""
    out: dict[str, list[str]] = {}
    for pod in pods:
        meta, st = pod.get("metadata") or {}, pod.get("status") or {}
        component = (meta.get("labels") or {}).get(names.COMPONENT_LABEL, "")
        problems = []
        for container in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILING_WAIT_REASONS:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                problems.append(f"container {container.get('name')}: {waiting['reason']}{detail}")
        for condition in st.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                problems.append(f"Unschedulable: {condition.get('message', '')}")
        if problems:
            out.setdefault(component, []).append(f"pod {meta.get('name')}: {'; '.join(problems)}")
    return out


def job_state(job: Mapping[str, Any] | None) -> tuple[str, str]:
    if job is None:
        return "Pending", "not created yet"
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded", ""
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed", condition.get("message") or condition.get("reason") or "the Job failed"
    if (status.get("succeeded") or 0) >= 1:
        return "Succeeded", ""
    return "Running", f"{status.get('failed') or 0} failed attempts so far"


def _deployment(children: Children, spec: PlatformSpec, workload: str) -> Mapping[str, Any] | None:
    return children.get(("apps/v1", "Deployment", builders.child(spec, workload)))


def image_of(deployment: Mapping[str, Any]) -> str | None:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if container["name"] == builders.CONTAINER:
            image: str = container["image"]
            return image
    return None


def target_rows(spec: PlatformSpec, children: Children) -> list[dict[str, Any]]:
    rows = []
    for name, workload in spec.workloads.items():
        deployment = _deployment(children, spec, name)
        row: dict[str, Any] = {"name": name, "autoscaling": workload.autoscaling.enabled}
        if deployment is not None:
            status = deployment.get("status") or {}
            row.update(
                replicas=deployment["spec"].get("replicas", 1),
                readyReplicas=status.get("readyReplicas", 0),
                updatedReplicas=status.get("updatedReplicas", 0),
                image=image_of(deployment),
            )
        rows.append(row)
    return rows


def _target_ready(row: Mapping[str, Any]) -> bool:
    return "replicas" in row and row["readyReplicas"] >= row["replicas"]


def _rolled_out(spec: PlatformSpec, children: Children, name: str) -> bool:
    deployment = _deployment(children, spec, name)
    if deployment is None or image_of(deployment) != spec.image:
        return False
    status = deployment.get("status") or {}
    generation = deployment["metadata"].get("generation", 0)
    replicas = deployment["spec"].get("replicas", 1)
    return bool(
        status.get("observedGeneration", 0) >= generation and status.get("updatedReplicas", 0) >= replicas
    )


def _deployment_trouble(spec: PlatformSpec, children: Children) -> tuple[str, str] | None:
    for name in spec.workloads:
        deployment = _deployment(children, spec, name)
        for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                return "ReplicaFailure", f"{name}: {condition.get('message', '')}"
            if condition.get("reason") == "ProgressDeadlineExceeded":
                return "ProgressDeadlineExceeded", f"{name}: {condition.get('message', '')}"
    return None


def conditions_for(
    spec: PlatformSpec, children: Children, seen: Observation, rows: Sequence[Mapping[str, Any]]
) -> list[Condition]:
    out = []
    not_ready = [d for d in seen.dependencies if not d.ready]
    if seen.missing_secrets or any(d.missing_secret for d in not_ready):
        missing = sorted({*seen.missing_secrets, *(d.message for d in not_ready if d.missing_secret)})
        deps = Condition("DependenciesReady", False, "MissingSecret", "; ".join(missing))
    elif not_ready:
        deps = Condition(
            "DependenciesReady",
            False,
            "DependencyNotReady",
            "; ".join(f"{d.name}: {d.message}" for d in not_ready),
        )
    else:
        deps = Condition("DependenciesReady", True, "DependenciesReady", "every data store is ready")
    out.append(deps)

    migration = seen.migration
    migrated = migration.state in ("Succeeded", "NotNeeded")
    stuck = seen.pod_failures.get(names.MIGRATION, []) if migration.state == "Running" else []
    if stuck:
        migrating = Condition(
            "MigrationsComplete", False, "MigrationPodFailing", f"Job {migration.job}: {'; '.join(stuck)}"
        )
    else:
        migrating = Condition(
            "MigrationsComplete",
            migrated,
            {
                "NotNeeded": "NoMigrationNeeded",
                "Succeeded": "MigrationSucceeded",
                "Failed": "MigrationFailed",
                "WaitingForDatabase": "WaitingForDatabase",
            }.get(migration.state, "MigrationRunning"),
            migration.message
            or (f"Job {migration.job}: {migration.state}" if migration.job else "no tables to migrate"),
        )
    out.append(migrating)
    failing_pods = [
        line
        for component, lines in sorted(seen.pod_failures.items())
        if component != names.MIGRATION
        for line in lines
    ]

    pending = [name for name in spec.workloads if not _rolled_out(spec, children, name)]
    if not pending:
        progressing = Condition("Progressing", False, "RolloutComplete", f"every target runs {spec.version}")
    elif not migrated:
        progressing = Condition(
            "Progressing",
            True,
            "WaitingForMigration",
            f"{', '.join(pending)} wait for the migration to {spec.version}",
        )
    else:
        progressing = Condition(
            "Progressing", True, "RollingOut", f"rolling out {spec.version}: {', '.join(pending)}"
        )
    out.append(progressing)

    trouble = _deployment_trouble(spec, children)
    if seen.refused:
        degraded = Condition("Degraded", True, "ChildRefused", "not applied: " + "; ".join(seen.refused))
    elif migration.state == "Failed":
        degraded = Condition("Degraded", True, "MigrationFailed", migration.message)
    elif stuck:
        degraded = Condition("Degraded", True, "MigrationPodFailing", migrating.message)
    elif deps.reason == "MissingSecret":
        degraded = Condition("Degraded", True, "MissingSecret", deps.message)
    elif trouble is not None:
        degraded = Condition("Degraded", True, *trouble)
    elif failing_pods:
        degraded = Condition("Degraded", True, "PodFailing", "; ".join(failing_pods))
    else:
        degraded = Condition("Degraded", False, "AsExpected", "nothing is failing")
    out.append(degraded)

    unready = [row["name"] for row in rows if not _target_ready(row)]
    if not rows:
        ready = Condition("Ready", False, "NoTargets", "no target is enabled")
    elif not unready:
        ready = Condition("Ready", True, "AllTargetsReady", f"{len(rows)}/{len(rows)} targets ready")
    elif not deps.status:
        ready = Condition("Ready", False, "DependenciesNotReady", deps.message)
    elif all("replicas" not in row for row in rows) and not migrated:
        ready = Condition(
            "Ready", False, "MigrationPending", migrating.message if stuck else progressing.message
        )
    else:
        ready = Condition(
            "Ready",
            False,
            "TargetsNotReady",
            f"{len(rows) - len(unready)}/{len(rows)} ready; waiting for {', '.join(unready)}",
        )
    out.insert(0, ready)
    if spec.paused:
        out.append(Condition("Paused", True, "SpecPaused", "spec.paused is true: no child is written"))
    return out


def phase_of(conditions: Sequence[Condition], paused: bool, any_deployment: bool) -> str:
    by_type = {c.type: c for c in conditions}
    if paused:
        return "Paused"
    if by_type["Degraded"].status:
        return "Degraded"
    if by_type["Ready"].status:
        return "Progressing" if by_type["Progressing"].status else "Ready"
    return "Progressing" if any_deployment else "Pending"


def render_conditions(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    out = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        old = before.get(condition.type)
        moved = old is None or old.get("status") != status
        out.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now if moved or old is None else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return out


def compute(
    spec: PlatformSpec,
    children: Children,
    seen: Observation,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The whole new status (to be compared with `previous` field by field)."""
    rows = target_rows(spec, children)
    conditions = conditions_for(spec, children, seen, rows)
    images = {row.get("image") for row in rows}
    version: str | None = previous.get("version")
    if rows and images == {spec.image} and all("image" in row for row in rows):
        version = spec.version
    status: dict[str, Any] = {
        "observedGeneration": spec.owner.generation,
        "phase": phase_of(conditions, spec.paused, any("replicas" in row for row in rows)),
        "url": builders.gateway_url(spec),
        "readyTargets": f"{sum(_target_ready(row) for row in rows)}/{len(rows)}",
        "conditions": render_conditions(
            conditions, previous.get("conditions") or [], spec.owner.generation, now
        ),
        "targets": rows,
        "dependencies": [
            {
                "name": d.name,
                "mode": d.mode,
                "ready": d.ready,
                **({"message": d.message} if d.message else {}),
            }
            for d in seen.dependencies
        ],
        "migration": {
            key: value
            for key, value in {
                "job": seen.migration.job,
                "image": spec.image if seen.migration.job else None,
                "state": seen.migration.state,
            }.items()
            if value is not None
        },
    }
    if version is not None:
        status["version"] = version
    return status


def status_patch(new: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields that changed (a merge patch); empty when nothing did."""
    patch: dict[str, Any] = {key: value for key, value in new.items() if previous.get(key) != value}
    for key in previous.keys() - new.keys():
        if key in ("version",):
            continue
        patch[key] = None
    return patch


def transition_events(new: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]]) -> list[Event]:
    """An Event for each condition whose status or reason moved."""
    before = {c.get("type"): c for c in previous}
    events = []
    for condition in new:
        old = before.get(condition["type"])
        if old is not None and (old.get("status"), old.get("reason")) == (
            condition["status"],
            condition["reason"],
        ):
            continue
        bad = condition["reason"] in WARNING_REASONS
        events.append(
            Event(
                type="Warning" if bad else "Normal",
                reason=condition["reason"],
                message=f"{condition['type']}={condition['status']}: {condition['message']}"[:1000],
            )
        )
    return events
