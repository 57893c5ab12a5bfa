"""The charts and the plain manifests are derived from one source and stay so: the generated files
are up to date, the CRD is the same object everywhere, and k8s/operator/ says nothing the operator
chart's default rendering does not say too."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
import yaml

from coder.charts import generate
from coder.operator import crd, deploy, names
from coder.tests.delivery.conftest import OPERATOR_CHART, PLATFORM_CHART, REPO, documents
from coder.tests.support.kube import find_bin_dir

K8S = REPO / "k8s"


@pytest.fixture(scope="module")
def helm() -> str:
    return str(find_bin_dir() / "helm")


def operator_chart_objects(helm: str) -> dict[tuple[str, str], dict[str, Any]]:
    rendered = generate.helm_template(OPERATOR_CHART, deploy.NAME, "-n", deploy.NAMESPACE, helm=helm)
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered}


def contains(big: Any, small: Any, path: str = "") -> list[str]:
    """Where `small` is not part of `big`: maps may have more keys, lists must match item by item."""
    if isinstance(small, dict):
        if not isinstance(big, dict):
            return [f"{path}: {big!r} is not a map"]
        return [
            miss for key, value in small.items() for miss in contains(big.get(key), value, f"{path}.{key}")
        ]
    if isinstance(small, list):
        if not isinstance(big, list) or len(big) != len(small):
            return [f"{path}: {big!r} != {small!r}"]
        return [
            miss
            for i, (b, s) in enumerate(zip(big, small, strict=True))
            for miss in contains(b, s, f"{path}[{i}]")
        ]
    return [] if big == small else [f"{path}: {big!r} != {small!r}"]


def test_generated_files_are_up_to_date(helm: str):
    """`charts/generate.py --check`: rerun `.venv/bin/python charts/generate.py` when this fails."""
    files = generate.expected(helm=helm)
    assert [str(path.relative_to(REPO)) for path in generate.stale(files)] == []


def test_crd_is_one_object_everywhere(helm: str):
    source = crd.crd_manifest()
    chart_file = yaml.safe_load((OPERATOR_CHART / "files" / "coderplatforms.yaml").read_text())
    plain = yaml.safe_load((K8S / "crd" / "coderplatforms.yaml").read_text())
    assert chart_file == source
    assert plain == source
    shipped = operator_chart_objects(helm)[("CustomResourceDefinition", names.CRD_NAME)]
    # Helm adds its labels and the keep annotation; everything else is the generated object.
    assert shipped["spec"] == source["spec"]
    assert shipped["metadata"]["labels"].items() >= source["metadata"]["labels"].items()
    assert shipped["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_plain_operator_manifests_match_the_chart(helm: str):
    chart = operator_chart_objects(helm)
    for path in sorted((K8S / "operator").glob("*.yaml")):
        for doc in documents(path.read_text()):
            if doc["kind"] == "Namespace":  # Helm installs into one: `--create-namespace`
                continue
            key = (doc["kind"], doc["metadata"]["name"])
            assert key in chart, f"{path.name}: {key} is not in the chart"
            assert contains(chart[key], doc) == [], f"{path.name}: {key}"


def test_kustomization_lists_every_plain_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    on_disk = sorted(str(p.relative_to(K8S)) for d in ("crd", "operator") for p in (K8S / d).glob("*.yaml"))
    assert sorted(kustomization["resources"]) == on_disk


def test_chart_versions_follow_the_package():
    for chart in (OPERATOR_CHART, PLATFORM_CHART):
        assert yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"] == version("coder-platform")


def test_values_schema_is_the_crd_spec():
    schema = generate.values_schema()
    spec = crd.spec_schema()
    assert set(schema["properties"]) == set(spec["properties"]) | set(generate.CHART_ONLY_VALUES)
    defaults = schema["properties"]["defaults"]
    assert defaults["additionalProperties"] is False
    assert (
        defaults["properties"]["replicas"]["maximum"]
        == spec["properties"]["defaults"]["properties"]["replicas"]["maximum"]
    )
    # Free-form Kubernetes types stay open (the API server validates them in the pods).
    assert "additionalProperties" not in defaults["properties"]["podTemplate"]["properties"]["affinity"]
