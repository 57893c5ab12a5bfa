"""The reconcile function against a real API server, one step at a time (kopf is tested elsewhere).

Readiness that a kubelet or the StatefulSet/Job controllers would report is written by the test
through the status subresources (see conftest.Cluster); everything else is the real API server.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from coder.operator import names
from coder.operator.reconcile import reconcile
from coder.runner import registry
from coder.tests.operator.conftest import TEN_LINE_CR, Cluster, eventually, expected_children, kinds_and_names

APPS, CORE, BATCH, NET = "apps/v1", "v1", "batch/v1", "networking.k8s.io/v1"


def with_spec(extra: str) -> str:
    """The ten-line CR with more spec lines (YAML, indented under `spec:`)."""
    return TEN_LINE_CR + extra


def condition(body, kind: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


async def test_ten_line_cr_converges_to_every_child_with_owner_references(cluster: Cluster):
    cluster.apply_cr()
    first = await cluster.reconcile()
    children = await cluster.children()
    # Before PostgreSQL is ready there is no migration Job, and before it succeeded no Deployment.
    assert not any(kind in ("Job", "Deployment") for _, kind, _ in children)
    assert "Secret/coder-postgres" in first.applied

    await cluster.statefulsets_become_ready()
    second = await cluster.reconcile()
    assert [a.split("/")[0] for a in second.applied] == ["Job"]
    await cluster.jobs_finish()
    third = await cluster.reconcile()
    assert sorted(a.split("/")[0] for a in third.applied) == ["Deployment"] * len(registry.descriptors())

    children = await cluster.children()
    assert kinds_and_names(children) == expected_children()
    uid = (await cluster.cr())["metadata"]["uid"]
    for key, obj in children.items():
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [("CoderPlatform", uid, True)], key
    # Ports and commands come from the registry.
    for name, target in registry.descriptors().items():
        container = children[(APPS, "Deployment", f"coder-{name}")]["spec"]["template"]["spec"]["containers"][
            0
        ]
        assert container["args"][:3] == ["run", "--target", name]
        ports = [("http", target.port), ("metrics", 9464)]  # /metrics on a port of its own
        assert [(p["name"], p["containerPort"]) for p in container["ports"]] == ports
        assert container["image"] == "coderide/coder-platform:1.0.0"
        service = children[(CORE, "Service", f"coder-{name}")]["spec"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["ports"]] == [
            (n, port, n) for n, port in ports
        ]


async def test_second_reconcile_writes_nothing(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    await cluster.settle()
    await cluster.reconcile()  # takes in the Deployments' status
    await cluster.settle()
    before = await cluster.versions()
    cr_before = (await cluster.cr())["metadata"]["resourceVersion"]

    cluster.kube.requests.reset()
    outcome = await cluster.reconcile()
    assert (outcome.applied, outcome.deleted, outcome.status_patch) == ([], [], {})
    assert cluster.kube.requests.writes == 0, cluster.kube.requests.write_paths()
    assert await cluster.versions() == before
    assert (await cluster.cr())["metadata"]["resourceVersion"] == cr_before


async def test_edited_or_deleted_child_is_restored(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    cluster.kubectl("set", "image", "deployment/coder-secrets", "app=evil:latest")
    cluster.kubectl("label", "service/coder-usage", f"{names.INSTANCE_LABEL}-", "--overwrite")  # unlisted now
    cluster.kubectl("delete", "configmap", "coder-config")
    cluster.kubectl(
        "patch",
        "networkpolicy",
        "coder-postgres",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/spec/ingress"}]',
    )

    outcome = await cluster.reconcile()
    assert set(outcome.applied) >= {
        "Deployment/coder-secrets",
        "Service/coder-usage",
        "ConfigMap/coder-config",
        "NetworkPolicy/coder-postgres",
    }
    children = await cluster.children()
    image = children[(APPS, "Deployment", "coder-secrets")]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    assert image == "coderide/coder-platform:1.0.0"
    assert children[(NET, "NetworkPolicy", "coder-postgres")]["spec"]["ingress"]
    assert kinds_and_names(children) == expected_children()
    # And once restored, nothing more to do.
    assert (await cluster.reconcile()).applied == []


async def test_disabling_a_target_prunes_it_and_its_data_stores(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    # Only the gateway: every other target goes, and so does each data store only they used.
    others = [name for name in registry.descriptors() if name != "gateway"]
    cluster.patch_cr({"spec": {"targets": {name: {"enabled": False} for name in others}}})
    outcome = await cluster.reconcile()
    assert {f"Deployment/coder-{name}" for name in others} <= set(outcome.deleted)

    # Deletion is asynchronous: an orphaning delete (StatefulSets keep their volumes) leaves the
    # object in place with a finalizer until the garbage collector has released its pods.
    async def only_the_gateways_children():
        children = await cluster.children()
        return children if kinds_and_names(children) == expected_children(["gateway"]) else None

    children = await eventually("only the gateway's children", only_the_gateways_children, timeout=60)
    # The keys Secrets outlive a disabled target: they unlock the data it stored.
    # Re-enabling brings them back with the same generated keys.
    keys = children[(CORE, "Secret", "coder-secrets-keys")]["data"]
    cluster.patch_cr({"spec": {"targets": None}})
    await cluster.bring_up()
    children = await cluster.children()
    assert kinds_and_names(children) == expected_children()
    assert children[(CORE, "Secret", "coder-secrets-keys")]["data"] == keys


async def test_config_change_rolls_only_the_affected_deployments(cluster: Cluster):
    # RabbitMQ: a data store some targets use and others (the gateway) do not.
    cluster.kubectl(
        "create", "secret", "generic", "shared-amqp", "--from-literal=url=amqp://old.example:5672/"
    )
    cluster.apply_cr(with_spec("  rabbitmq:\n    external:\n      urlSecretRef: {name: shared-amqp}\n"))
    await cluster.bring_up()
    amqp_users = {n for n, t in registry.descriptors().items() if "rabbitmq" in t.needs}
    assert amqp_users and amqp_users != set(registry.descriptors())

    def templates(children) -> dict[str, str]:
        return {
            name: json.dumps(obj["spec"]["template"], sort_keys=True)
            for (_, kind, name), obj in children.items()
            if kind == "Deployment"
        }

    before = templates(await cluster.children())
    # 1. A rotated external Secret rolls the targets that read it, and only those.
    new_url = base64.b64encode(b"amqp://new.example:5672/").decode()
    cluster.kubectl(
        "patch", "secret", "shared-amqp", "--type=merge", "-p", json.dumps({"data": {"url": new_url}})
    )
    outcome = await cluster.reconcile()
    assert set(outcome.applied) == {f"Deployment/coder-{n}" for n in amqp_users}
    after = templates(await cluster.children())
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"coder-{n}" for n in amqp_users}

    # 2. A target's own env rolls that target alone.
    cluster.patch_cr(
        {"spec": {"targets": {"secrets": {"env": [{"name": "SECRETS_DEFAULT_MAX_VERSIONS", "value": "5"}]}}}}
    )
    outcome = await cluster.reconcile()
    assert outcome.applied == ["Deployment/coder-secrets"]
    again = templates(await cluster.children())
    assert {name for name in after if after[name] != again[name]} == {"coder-secrets"}


async def test_autoscaled_target_never_gets_its_replicas_written(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    assert "replicas" in (await cluster.children())[(APPS, "Deployment", "coder-gateway")]["spec"]

    cluster.patch_cr(
        {
            "spec": {
                "targets": {"gateway": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}}
            }
        }
    )
    outcome = await cluster.reconcile()
    assert {"HorizontalPodAutoscaler/coder-gateway", "PodDisruptionBudget/coder-gateway"} <= set(
        outcome.applied
    )
    hpa = (await cluster.children())[("autoscaling/v2", "HorizontalPodAutoscaler", "coder-gateway")]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    # The autoscaler scales (as the HPA controller would, through the scale subresource)...
    await cluster.kube.client.patch(
        Deployment.Scale,
        "coder-gateway",
        {"spec": {"replicas": 3}},
        namespace=cluster.namespace,
        patch_type=PatchType.MERGE,
        field_manager="horizontal-pod-autoscaler",
    )
    # ...and a change that rolls the Deployment keeps the autoscaler's count.
    cluster.patch_cr({"spec": {"targets": {"gateway": {"env": [{"name": "X", "value": "1"}]}}}})
    await cluster.reconcile()
    deployment = (await cluster.children())[(APPS, "Deployment", "coder-gateway")]
    assert deployment["spec"]["replicas"] == 3
    managers = {
        e["manager"]
        for e in deployment["metadata"]["managedFields"]
        if "f:replicas" in e.get("fieldsV1", {}).get("f:spec", {})
    }
    assert names.FIELD_MANAGER not in managers
    assert (await cluster.reconcile()).applied == []

    # Autoscaling off: the operator owns replicas again.
    cluster.patch_cr({"spec": {"targets": {"gateway": {"autoscaling": {"enabled": False}, "replicas": 1}}}})
    outcome = await cluster.reconcile()
    assert "HorizontalPodAutoscaler/coder-gateway" in outcome.deleted
    assert (await cluster.children())[(APPS, "Deployment", "coder-gateway")]["spec"]["replicas"] == 1


async def test_new_version_rolls_out_only_after_its_migration_succeeded(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    cluster.patch_cr({"spec": {"version": "1.1.0"}})
    outcome = await cluster.reconcile()
    assert [a.split("/")[0] for a in outcome.applied] == ["Job"]
    assert any(d.startswith("Job/") for d in outcome.deleted)  # the 1.0.0 Job
    children = await cluster.children()
    images = {
        obj["spec"]["template"]["spec"]["containers"][0]["image"]
        for (_, k, _), obj in children.items()
        if k == "Deployment"
    }
    assert images == {"coderide/coder-platform:1.0.0"}
    body = await cluster.cr()
    assert condition(body, "MigrationsComplete")["reason"] == "MigrationRunning"
    assert condition(body, "Progressing")["reason"] == "WaitingForMigration"
    assert body["status"]["version"] == "1.0.0"

    # A failed migration: Degraded, and still the old version everywhere.
    await cluster.jobs_finish(succeeded=False)
    outcome = await cluster.reconcile()
    assert outcome.applied == []
    body = await cluster.cr()
    assert (condition(body, "Degraded")["status"], condition(body, "Degraded")["reason"]) == (
        "True",
        "MigrationFailed",
    )
    assert "backoff limit" in condition(body, "MigrationsComplete")["message"]
    assert [e.type for e in outcome.events if e.reason == "MigrationFailed"] == ["Warning", "Warning"]

    # Deleting the failed Job retries it; success rolls every Deployment.
    cluster.kubectl("delete", "jobs", "--all")
    await cluster.reconcile()
    await cluster.jobs_finish()
    outcome = await cluster.reconcile()
    assert sorted(a.split("/")[0] for a in outcome.applied) == ["Deployment"] * len(registry.descriptors())
    await eventually("the Deployment controller to settle", cluster.deployments_settled)
    await cluster.reconcile()
    body = await cluster.cr()
    assert body["status"]["version"] == "1.1.0"
    assert condition(body, "MigrationsComplete")["reason"] == "MigrationSucceeded"


async def test_conditions_and_observed_generation_progress(cluster: Cluster):
    cluster.apply_cr()
    await cluster.reconcile()
    body = await cluster.cr()
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 1
    assert body["status"]["phase"] == "Pending"
    assert condition(body, "Ready")["reason"] == "DependenciesNotReady"
    assert condition(body, "MigrationsComplete")["reason"] == "WaitingForDatabase"
    assert condition(body, "DependenciesReady")["status"] == "False"

    await cluster.bring_up()
    await eventually("the Deployment controller to settle", cluster.deployments_settled)
    await cluster.reconcile()
    body = await cluster.cr()
    assert condition(body, "DependenciesReady")["status"] == "True"
    assert condition(body, "MigrationsComplete")["status"] == "True"
    assert condition(body, "Ready")["reason"] == "TargetsNotReady"
    assert body["status"]["readyTargets"] == f"0/{len(registry.descriptors())}"

    await eventually("pods to exist", cluster.pods_become_ready)

    async def ready():
        await cluster.reconcile()
        return (await cluster.cr())["status"]["phase"] == "Ready"

    await eventually("Ready", ready)
    body = await cluster.cr()
    assert condition(body, "Ready")["status"] == "True"
    assert condition(body, "Progressing")["reason"] == "RolloutComplete"
    assert condition(body, "Degraded")["status"] == "False"
    assert body["status"]["version"] == "1.0.0"
    assert all(row["readyReplicas"] == row["replicas"] == 1 for row in body["status"]["targets"])
    ready_since = condition(body, "Ready")["lastTransitionTime"]

    cluster.patch_cr({"spec": {"targets": {"usage": {"replicas": 2}}}})
    await cluster.reconcile()
    body = await cluster.cr()
    assert body["metadata"]["generation"] == 2
    assert body["status"]["observedGeneration"] == 2
    assert all(c["observedGeneration"] == 2 for c in body["status"]["conditions"])
    assert condition(body, "Ready")["status"] == "False"  # usage has 1 of 2 pods
    assert condition(body, "Ready")["lastTransitionTime"] >= ready_since


async def test_paused_stops_every_write(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    cluster.patch_cr({"spec": {"paused": True}})
    await cluster.reconcile()
    body = await cluster.cr()
    assert body["status"]["phase"] == "Paused"
    assert condition(body, "Paused")["reason"] == "SpecPaused"

    cluster.kubectl("delete", "service", "coder-gateway")
    cluster.patch_cr({"spec": {"version": "2.0.0", "targets": {"usage": {"enabled": False}}}})
    await cluster.settle()
    before = await cluster.versions()
    cluster.kube.requests.reset()
    outcome = await cluster.reconcile()
    assert (outcome.applied, outcome.deleted) == ([], [])
    assert cluster.kube.requests.write_paths() == [
        (
            "PATCH",
            f"/apis/platform.coderide.io/v1alpha1/namespaces/{cluster.namespace}/coderplatforms/coder/status",
        )
    ]
    assert await cluster.versions() == before

    cluster.patch_cr({"spec": {"paused": False}})
    outcome = await cluster.reconcile()
    assert "Service/coder-gateway" in outcome.applied
    assert "Deployment/coder-usage" in outcome.deleted
    assert not any(c["type"] == "Paused" for c in (await cluster.cr())["status"]["conditions"])


async def test_missing_external_secret_is_reported(cluster: Cluster):
    cluster.apply_cr(with_spec("  postgres:\n    external:\n      urlSecretRef: {name: pg, key: dsn}\n"))
    outcome = await cluster.reconcile()
    body = await cluster.cr()
    assert condition(body, "DependenciesReady")["reason"] == "MissingSecret"
    assert "Secret pg not found" in condition(body, "DependenciesReady")["message"]
    assert condition(body, "Degraded")["reason"] == "MissingSecret"
    assert any(e.type == "Warning" and e.reason == "MissingSecret" for e in outcome.events)
    assert not any(
        kind == "StatefulSet" and name == "coder-postgres" for _, kind, name in await cluster.children()
    )

    cluster.kubectl("create", "secret", "generic", "pg", "--from-literal=dsn=postgresql://u:p@db:5432/coder")
    await cluster.reconcile()  # the database is there: the migration Job starts
    children = await cluster.children()
    job = next(obj for (_, kind, _), obj in children.items() if kind == "Job")
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}}} in env
    assert (
        condition(await cluster.cr(), "DependenciesReady")["reason"] == "DependencyNotReady"
    )  # redis, rabbitmq


async def test_a_spec_that_cannot_work_is_reported_not_applied(cluster: Cluster):
    # Each block is valid on its own; merged, the target's minimum exceeds the default maximum.
    merged_invalid = {
        "defaults": {"autoscaling": {"enabled": True, "maxReplicas": 3}},
        "targets": {"usage": {"autoscaling": {"minReplicas": 4}}},
    }
    cluster.apply_cr()
    # Admission refuses it now (tests/operator/test_crd.py); an object an older CRD admitted still
    # reaches the operator, which reports it rather than applying anything.
    refused = cluster.kubectl(
        "patch", "cp", "coder", "--type=merge", "-p", json.dumps({"spec": merged_invalid}), check=False
    )
    assert "targets.usage.autoscaling.minReplicas must not exceed maxReplicas" in refused.stderr
    body = await cluster.cr()
    body["spec"].update(merged_invalid)
    outcome = await reconcile(cluster.kube, body)
    await cluster.kube.patch_status(cluster.namespace, "coder", outcome.status_patch)
    assert (outcome.applied, await cluster.children()) == ([], {})
    body = await cluster.cr()
    assert body["status"]["phase"] == "Degraded"
    assert condition(body, "Degraded")["reason"] == "InvalidSpec"
    assert "minReplicas 4 exceeds maxReplicas 3" in condition(body, "Ready")["message"]
    assert [e.type for e in outcome.events] == ["Warning", "Warning"]


async def test_a_refused_child_is_reported_and_the_others_still_applied(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    # Admission lets it in (tolerations pass through as they are); the Deployment's validation does not.
    cluster.patch_cr(
        {
            "spec": {
                "targets": {
                    "usage": {"podTemplate": {"tolerations": [{"key": "dedicated", "operator": "Bogus"}]}},
                    "gateway": {"resources": {"limits": {"memory": "4Gi"}}},
                },
            }
        }
    )
    outcome = await cluster.reconcile()  # does not raise
    assert [r.split(":")[0] for r in outcome.refused] == ["Deployment/coder-usage"]
    assert "Deployment/coder-gateway" in outcome.applied  # the others still go out
    body = await cluster.cr()
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["phase"] == "Degraded"
    degraded = condition(body, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChildRefused")
    # The API server's own words.
    assert "Deployment/coder-usage" in degraded["message"]
    assert 'Unsupported value: "Bogus"' in degraded["message"]
    warnings = [e for e in outcome.events if e.type == "Warning" and e.reason == "ChildRefused"]
    assert warnings and "coder-usage" in warnings[0].message

    # Fixed: Degraded clears.
    fixed = [{"key": "dedicated", "operator": "Exists"}]
    cluster.patch_cr({"spec": {"targets": {"usage": {"podTemplate": {"tolerations": fixed}}}}})
    outcome = await cluster.reconcile()
    assert outcome.refused == [] and "Deployment/coder-usage" in outcome.applied
    assert condition(await cluster.cr(), "Degraded")["status"] == "False"


async def test_a_stuck_migration_pod_is_reported_as_such(cluster: Cluster):
    cluster.apply_cr()
    await cluster.reconcile()
    await cluster.statefulsets_become_ready()
    await cluster.reconcile()  # creates the migration Job
    job = next(name for _, kind, name in await cluster.children() if kind == "Job")
    # What the Job controller and the kubelet would leave: the Job's pod, its image refused.
    labels = names.selector_labels("coder", names.MIGRATION)
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-x7k2p", "labels": {**labels, "batch.kubernetes.io/job-name": job}},
        "spec": {"containers": [{"name": "migrate", "image": "Bad Image"}], "restartPolicy": "Never"},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    waiting = {"reason": "InvalidImageName", "message": 'Failed to apply default image tag "Bad Image"'}
    await cluster.kube.client.patch(
        Pod.Status,
        pod["metadata"]["name"],
        {
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "migrate",
                        "image": "Bad Image",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": waiting},
                    }
                ],
            }
        },
        namespace=cluster.namespace,
        patch_type=PatchType.MERGE,
    )
    outcome = await cluster.reconcile()
    body = await cluster.cr()
    migrations = condition(body, "MigrationsComplete")
    assert migrations["reason"] == "MigrationPodFailing"
    assert "InvalidImageName" in migrations["message"] and "Bad Image" in migrations["message"]
    degraded = condition(body, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "MigrationPodFailing")
    assert "nothing is failing" not in degraded["message"]
    assert "InvalidImageName" in condition(body, "Ready")["message"]
    assert any(e.type == "Warning" and e.reason == "MigrationPodFailing" for e in outcome.events)


async def test_entries_another_field_manager_added_to_owned_lists_are_removed(cluster: Cluster):
    cluster.apply_cr()
    await cluster.bring_up()
    desired = await cluster.children()
    gateway_port = registry.descriptors()["gateway"].port
    # 1. Service ports: the desired port renumbered by hand (kubectl patch, an Update manager): the
    # apply alone would put the desired port beside it, a duplicate name the API server refuses.
    cluster.kubectl(
        "patch",
        "service",
        "coder-gateway",
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/ports/0/port", "value": 3999}]),
    )
    # 2. A Deployment's containers, env and volumes, added by another server-side apply manager.
    extra = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coder-secrets"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "EXTRA", "value": "1"}]},
                        {"name": "sidecar", "image": "busybox:1"},
                    ],
                    "volumes": [{"name": "extra", "emptyDir": {}}],
                }
            }
        },
    }
    cluster.kubectl("apply", "--server-side", "--field-manager=someone", "-f", "-", input=json.dumps(extra))
    # 3. A data store's env, by the same other manager.
    store = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "coder-redis"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "redis", "env": [{"name": "X", "value": "1"}]}]}}
        },
    }
    cluster.kubectl("apply", "--server-side", "--field-manager=someone", "-f", "-", input=json.dumps(store))

    outcome = await cluster.reconcile()
    assert outcome.refused == []
    assert {"Service/coder-gateway", "Deployment/coder-secrets", "StatefulSet/coder-redis"} <= set(
        outcome.applied
    )
    children = await cluster.children()
    ports = children[(CORE, "Service", "coder-gateway")]["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("http", gateway_port), ("metrics", 9464)]
    for key in ((APPS, "Deployment", "coder-secrets"), (APPS, "StatefulSet", "coder-redis")):
        have, want = children[key]["spec"]["template"]["spec"], desired[key]["spec"]["template"]["spec"]
        assert [c["name"] for c in have["containers"]] == [c["name"] for c in want["containers"]], key
        assert have["containers"][0].get("env") == want["containers"][0].get("env"), key
        assert [v["name"] for v in have.get("volumes", [])] == [v["name"] for v in want.get("volumes", [])]
        managers = {e["manager"] for e in children[key]["metadata"]["managedFields"]}
        assert "someone" not in managers, key
    # Converged: the next reconciles write nothing.
    assert (await cluster.reconcile()).applied == []
    cluster.kube.requests.reset()
    await cluster.reconcile()
    assert [p for p in cluster.kube.requests.write_paths() if not p[1].endswith("/status")] == []
