"""The plain manifests: `kubectl apply -k k8s` installs the CRD and the operator, `kubectl apply -k
k8s/samples/<sample>` each sample, and the operator (in-process, with the token of the ServiceAccount
k8s/operator/ creates) converges every sample to its expected children."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coder.operator import deploy, names
from coder.tests.delivery.conftest import (
    EXTERNAL_SECRETS,
    REPO,
    SAMPLES,
    Cluster,
    cluster,
    expected_children,
    running_operator,
)

K8S = REPO / "k8s"
SAMPLE_NAME = "coder"  # what the samples' CoderPlatform is called (the release they are rendered as)


@pytest.fixture(scope="module")
def kustomize_cluster() -> Iterator[Cluster]:
    with cluster() as c:
        c.kubectl("apply", "-k", str(K8S))
        c.wait_crd()
        yield c


def test_k8s_installs_crd_operator_and_rbac(kustomize_cluster: Cluster):
    c = kustomize_cluster
    operator = c.get("-n", deploy.NAMESPACE, f"deployment/{deploy.NAME}")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == deploy.NAME
    assert c.get(f"clusterrole/{deploy.NAME}")["rules"] == deploy.cluster_role()["rules"]


def test_samples_converge_under_the_operator(kustomize_cluster: Cluster):
    c = kustomize_cluster
    for sample in SAMPLES:
        namespace = f"sample-{sample}"
        c.create_namespace(namespace)
        if sample == "production":
            for secret, data in EXTERNAL_SECRETS.items():
                literals = [f"--from-literal={key}={value}" for key, value in data.items()]
                c.kubectl("-n", namespace, "create", "secret", "generic", secret, *literals)
        c.kubectl("apply", "-k", str(K8S / "samples" / sample), "-n", namespace)

    kubeconfig = c.token_kubeconfig(deploy.NAMESPACE, deploy.NAME)
    with running_operator(kubeconfig):
        for sample in SAMPLES:
            namespace = f"sample-{sample}"
            c.bring_up(namespace, SAMPLE_NAME)
            body = c.get("-n", namespace, f"coderplatform/{SAMPLE_NAME}")
            children = c.children(namespace, SAMPLE_NAME)
            assert set(children) == expected_children(body), sample
            kinds = {kind for kind, _ in children}
            if sample == "production":
                # External data stores: no StatefulSet; autoscaling: an HPA and a PDB per target.
                assert "StatefulSet" not in kinds
                assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"} <= kinds
            if sample == "monolithic":
                deployments = [name for kind, name in children if kind == "Deployment"]
                assert deployments == [f"{SAMPLE_NAME}-{names.MONOLITH}"]
        c.kubectl("get", "coderplatforms", "-A")
