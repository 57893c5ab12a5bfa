"""Both charts installed with Helm into a real API server, the operator (run in-process with the
chart's ServiceAccount token, so the chart's RBAC is what it gets) converging the release's
CoderPlatform, then `helm upgrade` and `helm uninstall` doing what the charts promise.

One scenario in steps that build on each other, in one module-scoped cluster: each test is one
step, and a failed step fails the ones after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coder.operator import crd, deploy, names
from coder.runner import registry
from coder.tests.delivery.conftest import (
    OPERATOR_CHART,
    PLATFORM_CHART,
    Cluster,
    cluster,
    expected_children,
    running_operator,
    wait_for,
)

OPERATOR_NS = "coder-system"
PLATFORM_NS = "coder"
RELEASE = "coder"
# A column the "previous" chart version's CRD lacks, so `helm upgrade` has something to update.
ADDED_COLUMN = "Paused"


@pytest.fixture(scope="module")
def helm_cluster() -> Iterator[Cluster]:
    with cluster() as c:
        yield c


@pytest.fixture(scope="module")
def previous_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator chart as an older release would have shipped it: a CRD without one column."""
    chart = tmp_path_factory.mktemp("previous") / "coder-operator"
    shutil.copytree(OPERATOR_CHART, chart)
    crd_file = chart / "files" / "coderplatforms.yaml"
    old = yaml.safe_load(crd_file.read_text())
    version = old["spec"]["versions"][0]
    version["additionalPrinterColumns"] = [
        c for c in version["additionalPrinterColumns"] if c["name"] != ADDED_COLUMN
    ]
    crd_file.write_text(yaml.safe_dump(old))
    return chart


def columns(c: Cluster) -> list[str]:
    body = c.get(f"crd/{names.CRD_NAME}")
    return [col["name"] for col in body["spec"]["versions"][0]["additionalPrinterColumns"]]


def deployments(c: Cluster, namespace: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in c.get("-n", namespace, "deployments")["items"]}


def test_operator_chart_installs_crd_and_least_privilege_operator(
    helm_cluster: Cluster, previous_chart: Path
):
    c = helm_cluster
    notes = c.helm(
        "install", "coder-operator", str(previous_chart), "-n", OPERATOR_NS, "--create-namespace"
    ).stdout
    assert f"kubectl -n {OPERATOR_NS} rollout status deployment/coder-operator" in notes
    assert "`helm uninstall` leaves it, and every CoderPlatform, in place." in notes
    c.wait_crd()
    assert ADDED_COLUMN not in columns(c)
    body = c.get(f"crd/{names.CRD_NAME}")
    assert body["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    operator = c.get("-n", OPERATOR_NS, "deployment/coder-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["coder-platform"]
    assert container["args"] == [
        "operator",
        "--liveness",
        f"http://0.0.0.0:{deploy.LIVENESS_PORT}/healthz",
        "--metrics-port",
        str(deploy.METRICS_PORT),
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    role = c.get("clusterrole/coder-operator")
    assert role["rules"] == deploy.cluster_role()["rules"]
    # Nothing beyond the operator's list: no wildcard, and Secrets are not readable cluster-wide
    # by anyone else through this release.
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    can = c.kubectl(
        "auth",
        "can-i",
        "delete",
        "pods",
        f"--as=system:serviceaccount:{OPERATOR_NS}:coder-operator",
        check=False,
    )
    assert can.stdout.strip() == "no"


def test_platform_chart_converges_under_the_operator(helm_cluster: Cluster):
    c = helm_cluster
    notes = c.helm("install", RELEASE, str(PLATFORM_CHART), "-n", PLATFORM_NS, "--create-namespace").stdout
    assert f"kubectl -n {PLATFORM_NS} wait coderplatform/{RELEASE} --for=condition=Ready" in notes
    body = c.get("-n", PLATFORM_NS, f"coderplatform/{RELEASE}")
    assert (
        body["spec"]["version"] == yaml.safe_load((PLATFORM_CHART / "Chart.yaml").read_text())["appVersion"]
    )

    kubeconfig = c.token_kubeconfig(OPERATOR_NS, "coder-operator")
    with running_operator(kubeconfig):
        c.bring_up(PLATFORM_NS, RELEASE)
        body = c.get("-n", PLATFORM_NS, f"coderplatform/{RELEASE}")
        children = c.children(PLATFORM_NS, RELEASE)
        assert set(children) == expected_children(body)
        assert {name for kind, name in children if kind == "Deployment"} == {
            f"{RELEASE}-{target}" for target in registry.descriptors()
        }
        assert body["status"]["url"] == f"http://{RELEASE}-gateway.{PLATFORM_NS}.svc:3000"
        c.kubectl("-n", PLATFORM_NS, "get", "coderplatforms")


def test_platform_upgrade_rolls_only_the_changed_target(helm_cluster: Cluster):
    c = helm_cluster
    before = deployments(c, PLATFORM_NS)
    changed = f"{RELEASE}-usage"
    kubeconfig = c.token_kubeconfig(OPERATOR_NS, "coder-operator")
    with running_operator(kubeconfig):
        c.helm(
            "upgrade",
            RELEASE,
            str(PLATFORM_CHART),
            "-n",
            PLATFORM_NS,
            "--reuse-values",
            "--set",
            "targets.usage.env[0].name=USAGE_LOG_LEVEL",
            "--set",
            "targets.usage.env[0].value=DEBUG",
        )
        wait_for(
            "the usage Deployment to roll",
            lambda: (
                deployments(c, PLATFORM_NS)[changed]["metadata"]["generation"]
                > before[changed]["metadata"]["generation"]
            ),
        )
        c.bring_up(PLATFORM_NS, RELEASE)
        after = deployments(c, PLATFORM_NS)
    env = after[changed]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "USAGE_LOG_LEVEL", "value": "DEBUG"} in env
    for name, deployment in after.items():
        if name != changed:
            assert deployment["metadata"]["generation"] == before[name]["metadata"]["generation"], name
    replica_sets = c.get("-n", PLATFORM_NS, "replicasets", "-l", f"{names.COMPONENT_LABEL}=usage")["items"]
    assert len(replica_sets) == 2  # the old and the new pod template


def images(c: Cluster) -> set[str]:
    return {
        d["spec"]["template"]["spec"]["containers"][0]["image"] for d in deployments(c, PLATFORM_NS).values()
    }


def test_version_upgrade_migrates_first_then_rolls_every_target(helm_cluster: Cluster):
    c = helm_cluster
    kubeconfig = c.token_kubeconfig(OPERATOR_NS, "coder-operator")
    old_jobs = {j["metadata"]["name"] for j in c.get("-n", PLATFORM_NS, "jobs")["items"]}
    with running_operator(kubeconfig):
        c.helm(
            "upgrade",
            RELEASE,
            str(PLATFORM_CHART),
            "-n",
            PLATFORM_NS,
            "--reuse-values",
            "--set",
            "version=0.2.0",
        )
        job = wait_for(
            "the migration Job of 0.2.0",
            lambda: {j["metadata"]["name"] for j in c.get("-n", PLATFORM_NS, "jobs")["items"]} - old_jobs,
        )
        (name,) = job
        migrate = c.get("-n", PLATFORM_NS, f"job/{name}")["spec"]["template"]["spec"]["containers"][0]
        assert migrate["image"] == f"{crd.DEFAULT_IMAGE}:0.2.0"
        assert migrate["args"][0] == "migrate"
        # With the Job not yet succeeded, the operator has decided (and reported) that the rollout
        # waits for the migration; every target still runs the old version.

        def waiting_for_migration() -> bool:
            status = c.get("-n", PLATFORM_NS, f"coderplatform/{RELEASE}").get("status", {})
            progressing = [x for x in status.get("conditions", []) if x["type"] == "Progressing"]
            return any(x["reason"] == "WaitingForMigration" and "0.2.0" in x["message"] for x in progressing)

        wait_for("the rollout to wait for the migration", waiting_for_migration)
        assert images(c) == {f"{crd.DEFAULT_IMAGE}:0.1.0"}
        c.bring_up(PLATFORM_NS, RELEASE)
    assert images(c) == {f"{crd.DEFAULT_IMAGE}:0.2.0"}
    assert c.get("-n", PLATFORM_NS, f"coderplatform/{RELEASE}")["status"]["version"] == "0.2.0"
    c.kubectl("-n", PLATFORM_NS, "get", "coderplatforms")


def test_operator_upgrade_updates_the_crd_and_rolls_the_operator(helm_cluster: Cluster):
    c = helm_cluster
    before = c.get("-n", OPERATOR_NS, "deployment/coder-operator")["metadata"]["generation"]
    c.helm("upgrade", "coder-operator", str(OPERATOR_CHART), "-n", OPERATOR_NS, "--set", "resyncSeconds=10")
    assert ADDED_COLUMN in columns(c)
    served = c.get(f"crd/{names.CRD_NAME}")["spec"]["versions"][0]["additionalPrinterColumns"]
    assert served == crd.crd_manifest()["spec"]["versions"][0]["additionalPrinterColumns"]
    operator = c.get("-n", OPERATOR_NS, "deployment/coder-operator")
    assert operator["metadata"]["generation"] == before + 1
    assert operator["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--resync-seconds", "10"]
    wait_for(
        "a second ReplicaSet of the operator",
        lambda: len(c.get("-n", OPERATOR_NS, "replicasets")["items"]) == 2,
    )


def test_uninstall_keeps_the_crd_and_garbage_collects_the_platform(helm_cluster: Cluster):
    c = helm_cluster
    c.helm("uninstall", RELEASE, "-n", PLATFORM_NS, "--wait")
    wait_for(
        "the garbage collector to delete the platform's children",
        lambda: not c.children(PLATFORM_NS, RELEASE),
        timeout=90,
    )
    c.helm("uninstall", "coder-operator", "-n", OPERATOR_NS, "--wait")
    assert c.exists(f"crd/{names.CRD_NAME}")
    assert not c.exists("-n", OPERATOR_NS, "deployment/coder-operator")
    assert not c.exists("clusterrole/coder-operator")
