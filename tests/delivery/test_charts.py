"""Both charts: `helm lint --strict` clean, every value commented and schema-checked, and every
rendering (defaults, each values example, the chart tests) accepted by a real API server's
server-side dry run (schemas, the CRD's CEL rules, admission)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coder.operator import crd, names
from coder.runner import registry
from coder.tests.delivery.conftest import (
    OPERATOR_CHART,
    PLATFORM_CHART,
    Cluster,
    cluster,
    documents,
)

PLATFORM_EXAMPLES = sorted((PLATFORM_CHART / "ci").glob("*-values.yaml"))
# The operator chart's settings worth rendering besides its defaults.
OPERATOR_VARIANTS = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={team-a,team-b}", "--set", "resyncSeconds=15"],
    "dev": ["--set", "devReload=true", "--set", "securityContext.readOnlyRootFilesystem=false"],
    "no-crd": [
        "--set",
        "crd.install=false",
        "--set",
        "serviceAccount.create=false",
        "--set",
        "rbac.create=false",
    ],
}


@pytest.fixture(scope="module")
def dry_run_cluster() -> Iterator[Cluster]:
    with cluster() as c:
        # CoderPlatforms validate only once their CRD is served; the namespaces are the releases'.
        c.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd.crd_manifest()))
        c.wait_crd()
        for namespace in ("coder-system", "coder", "team-a", "team-b"):
            c.create_namespace(namespace)
        yield c


def template(c: Cluster, release: str, chart: Path, *args: str) -> str:
    return c.helm("template", release, str(chart), *args).stdout


LINTED = [
    (OPERATOR_CHART, None),
    (PLATFORM_CHART, None),
    *((PLATFORM_CHART, example) for example in PLATFORM_EXAMPLES),
]


@pytest.mark.parametrize(
    ("chart", "values"),
    LINTED,
    ids=[f"{chart.name}-{values.stem if values else 'defaults'}" for chart, values in LINTED],
)
def test_helm_lint_strict_is_clean(dry_run_cluster: Cluster, chart: Path, values: Path | None):
    out = dry_run_cluster.helm(
        "lint", "--strict", str(chart), *(["-f", str(values)] if values else [])
    ).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    # Not even the informational findings (e.g. a missing icon).
    assert not re.search(r"\[(INFO|WARNING|ERROR)\]", out), out


def undocumented_values(text: str) -> list[str]:
    """Keys of a values.yaml with no comment line above them, neither on themselves nor on an
    enclosing key (a map whose comment describes its children); a key whose children are all
    commented counts as documented too. Commented-out keys are comments, hence documented."""
    nodes: list[tuple[int, str, bool]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if match:
            commented = index > 0 and lines[index - 1].strip().startswith("#")
            nodes.append((len(match.group(1)), match.group(2), commented))

    def check(start: int) -> tuple[bool, list[str], int]:
        indent, key, commented = nodes[start]
        position, children_ok, missing = start + 1, True, []
        while position < len(nodes) and nodes[position][0] > indent:
            ok, below, position = check(position)
            children_ok &= ok
            missing += below
        has_children = position > start + 1
        if commented:
            return True, [], position
        if has_children and children_ok:
            return True, [], position
        return False, missing if has_children else [key], position

    position, missing = 0, []
    while position < len(nodes):
        _, below, position = check(position)
        missing += below
    return missing


@pytest.mark.parametrize("chart", [OPERATOR_CHART, PLATFORM_CHART], ids=lambda p: p.name)
def test_every_value_is_commented(chart: Path):
    assert undocumented_values((chart / "values.yaml").read_text()) == []
    assert undocumented_values("a: 1\n# -- b\nb: 2\nc:\n  d: 1\n") == ["a", "d"]


@pytest.mark.parametrize(
    ("chart", "args", "message"),
    [
        (OPERATOR_CHART, ["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
        (OPERATOR_CHART, ["--set", "image.pullPolicy=Sometimes"], "must be one of"),
        (
            PLATFORM_CHART,
            ["--set", "targets.nosuch.replicas=2"],
            "additional properties 'nosuch' not allowed",
        ),
        (
            PLATFORM_CHART,
            ["--set", "ingress.hots=coder.example.com"],
            "additional properties 'hots' not allowed",
        ),
        (PLATFORM_CHART, ["--set", "mode=mono"], "must be one of"),
        (PLATFORM_CHART, ["--set", "defaults.replicas=1000"], "maximum"),
    ],
)
def test_values_schema_refuses_mistakes(dry_run_cluster: Cluster, chart: Path, args: list[str], message: str):
    proc = dry_run_cluster.helm("template", "x", str(chart), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_platform_schema_knows_every_registered_target():
    """The targets come from the registry through the CRD; no template spells one out."""
    schema = yaml.safe_load((PLATFORM_CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["targets"]["properties"]) == set(registry.descriptors())
    templates = " ".join(path.read_text() for path in (PLATFORM_CHART / "templates").rglob("*.*"))
    # The gateway is the one named on purpose: its Service is where users are sent.
    for target in set(registry.descriptors()) - {"gateway"}:
        assert not re.search(rf"\b{target}\b", templates), target


@pytest.mark.parametrize("variant", list(OPERATOR_VARIANTS))
def test_operator_chart_renders_valid_objects(dry_run_cluster: Cluster, variant: str):
    c = dry_run_cluster
    rendered = template(
        c, "coder-operator", OPERATOR_CHART, "-n", "coder-system", *OPERATOR_VARIANTS[variant]
    )
    out = c.dry_run(rendered)
    kinds = {doc["kind"] for doc in documents(rendered)}
    assert "Deployment" in kinds and "Pod" in kinds  # the operator and the chart test
    if variant == "defaults":
        assert {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"} <= kinds
    if variant == "namespaced":
        assert "ClusterRole" not in kinds
        roles = [doc["metadata"]["namespace"] for doc in documents(rendered) if doc["kind"] == "Role"]
        # The rules in each watched namespace, and the leader-election Lease's in the release's own.
        assert roles == ["team-a", "team-b", "coder-system"]
    if variant == "no-crd":
        assert not kinds & {"CustomResourceDefinition", "ClusterRole", "ServiceAccount"}
    assert "(server dry run)" in out


@pytest.mark.parametrize("example", [None, *PLATFORM_EXAMPLES], ids=lambda p: p.stem if p else "defaults")
def test_platform_chart_renders_a_valid_coderplatform(dry_run_cluster: Cluster, example: Path | None):
    c = dry_run_cluster
    args = ["-f", str(example)] if example else []
    rendered = template(c, "coder", PLATFORM_CHART, "-n", "coder", *args)
    objects = documents(rendered)
    platforms = [doc for doc in objects if doc["kind"] == names.KIND]
    assert len(platforms) == 1
    assert platforms[0]["metadata"]["name"] == "coder"
    out = c.dry_run(rendered)
    assert f"coderplatform.{names.GROUP}/coder serverside-applied (server dry run)" in out


def test_platform_chart_passes_cel_rules_to_the_api_server(dry_run_cluster: Cluster):
    """What the values schema cannot express (managed XOR external) the API server refuses."""
    c = dry_run_cluster
    rendered = template(
        c,
        "coder",
        PLATFORM_CHART,
        "-n",
        "coder",
        "--set",
        "postgres.managed.storage=5Gi",
        "--set",
        "postgres.external.urlSecretRef.name=db",
    )
    proc = c.cp.run_kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=rendered, check=False
    )
    assert proc.returncode != 0
    assert "set exactly one of postgres.managed or postgres.external" in proc.stderr


def test_chart_tests_use_the_platform_image_and_gateway_port(dry_run_cluster: Cluster):
    c = dry_run_cluster
    rendered = documents(template(c, "coder", PLATFORM_CHART, "-n", "coder"))
    pod = next(doc for doc in rendered if doc["kind"] == "Pod")
    version = yaml.safe_load((PLATFORM_CHART / "Chart.yaml").read_text())["appVersion"]
    assert pod["spec"]["containers"][0]["image"] == f"{crd.DEFAULT_IMAGE}:{version}"
    gateway_port = registry.descriptors()["gateway"].port
    assert f"coder-gateway.coder.svc:{gateway_port}/healthz" in pod["spec"]["containers"][0]["command"][-1]


def test_an_all_digit_tag_stays_the_tag(dry_run_cluster: Cluster):
    """A short commit SHA can be all digits; `--set` (skaffold's way too) hands it to helm as a number."""
    c = dry_run_cluster
    tag = "7992055"
    operator = documents(
        template(c, "coder-operator", OPERATOR_CHART, "-n", "coder-system", "--set", f"image.tag={tag}")
    )
    (deployment,) = [doc for doc in operator if doc["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{tag}")
    rendered = template(c, "coder", PLATFORM_CHART, "-n", "coder", "--set", f"version={tag}")
    (platform,) = [doc for doc in documents(rendered) if doc["kind"] == names.KIND]
    assert platform["spec"]["version"] == tag  # a string, as the CRD wants
    assert "(server dry run)" in c.dry_run(rendered)


def test_notes_say_how_to_wait_and_reach_the_gateway(dry_run_cluster: Cluster):
    c = dry_run_cluster
    plain = c.helm("install", "coder", str(PLATFORM_CHART), "-n", "coder", "--dry-run=server").stdout
    assert "kubectl -n coder wait coderplatform/coder --for=condition=Ready" in plain
    assert "kubectl -n coder port-forward service/coder-gateway 3000:3000" in plain
    ingress = c.helm(
        "install",
        "coder",
        str(PLATFORM_CHART),
        "-n",
        "coder",
        "--dry-run=server",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=coder.example.com",
        "--set",
        "ingress.tlsSecretName=tls",
    ).stdout
    assert "https://coder.example.com" in ingress


def test_helm_binary_is_the_pinned_one(dry_run_cluster: Cluster):
    out = subprocess.run(
        [dry_run_cluster.cp.helm, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("v3.22.")
