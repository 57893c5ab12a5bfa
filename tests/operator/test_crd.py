"""The CRD as the API server sees it: installs, explains itself, defaults, and refuses bad specs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from coder.operator import crd, deploy, names
from coder.operator.main import render
from coder.operator.spec import Owner, parse
from coder.runner import registry
from coder.tests.operator.conftest import TEN_LINE_CR, Cluster

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_manifests_match_their_generator():
    """k8s/ is generated (`coder-platform operator manifests --output-dir k8s`); a stale file fails."""
    for relative, documents in deploy.files().items():
        path = REPO / "k8s" / relative
        assert path.read_text() == render(documents), (
            f"{path} is stale: run coder-platform operator manifests --output-dir k8s"
        )


def test_every_field_is_described():
    def walk(schema: dict, path: str) -> list[str]:
        missing = [] if schema.get("description") else [path]
        for key, sub in schema.get("properties", {}).items():
            missing += walk(sub, f"{path}.{key}")
        if "items" in schema and schema["items"].get("type") == "object":
            missing += walk(schema["items"], f"{path}[]")
        return missing

    assert walk(crd.spec_schema(), "spec") == []
    assert walk(crd.status_schema(), "status") == []


def test_cli_prints_the_crd():
    out = subprocess.run(
        [str(REPO / ".venv/bin/coder-platform"), "operator", "crd"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(out) == crd.crd_manifest()


def explain(cp, path: str) -> str:
    """`kubectl explain`, once the API server has published the CRD's schema (a few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        done = cp.run_kubectl("explain", path, check=False)
        if done.returncode == 0 or time.monotonic() > deadline:
            assert done.returncode == 0, done.stderr
            return done.stdout
        time.sleep(0.5)


def test_crd_installs_and_kubectl_explain_is_useful(cluster_with_crd):
    cp = cluster_with_crd
    crd_obj = json.loads(cp.run_kubectl("get", "crd", names.CRD_NAME, "-o", "json").stdout)
    established = {c["type"]: c["status"] for c in crd_obj["status"]["conditions"]}
    assert established["Established"] == "True" and established["NamesAccepted"] == "True"
    assert cp.run_kubectl("api-resources", "--api-group", names.GROUP).stdout.split("\n")[1].split()[:2] == [
        "coderplatforms",
        "cp",
    ]

    spec = explain(cp, "coderplatform.spec")
    for field in ("version", "mode", "defaults", "targets", "postgres", "ingress", "observability", "paused"):
        assert f"  {field}\t" in spec, field
    assert "enum: microservices, monolithic" in spec
    targets = explain(cp, "cp.spec.targets")
    flat = " ".join(targets.split())  # kubectl wraps long descriptions
    for name, target in registry.descriptors().items():
        assert f"  {name}\t<Object>" in targets
        assert f"on port {target.port}" in flat
    autoscaling = explain(cp, "cp.spec.defaults.autoscaling")
    assert "never writes the Deployment's replicas" in autoscaling
    postgres = explain(cp, "cp.spec.postgres")
    assert "exactly one of them" in postgres


async def test_ten_line_cr_is_defaulted_by_the_server_as_the_operator_reads_it(cluster: Cluster):
    cluster.apply_cr()
    body = await cluster.cr()
    stored = body["spec"]
    assert stored["mode"] == "microservices"
    assert stored["postgres"] == {
        "managed": {
            "image": "pgvector/pgvector:pg18",
            "storage": "10Gi",
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            # The data volume outlives the CoderPlatform unless the spec says otherwise.
            "pvcRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
        }
    }
    assert stored["defaults"]["autoscaling"]["maxReplicas"] == 5
    # The operator's own defaulting (for specs it parses itself) matches the API server's.
    assert crd.apply_defaults(crd.spec_schema(), {"version": "1.0.0"}) == stored
    owner = Owner("coder", cluster.namespace, body["metadata"]["uid"])
    assert parse(stored, owner) == parse({"version": "1.0.0"}, owner)


INVALID = {
    "both managed and external": (
        {"postgres": {"managed": {}, "external": {"urlSecretRef": {"name": "pg"}}}},
        "set exactly one of postgres.managed or postgres.external",
    ),
    "autoscaling min above max": (
        {"defaults": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    "ingress without host": (
        {"ingress": {"enabled": True}},
        "ingress.host is required when ingress.enabled is true",
    ),
    "unknown mode": ({"mode": "serverless"}, 'Unsupported value: "serverless"'),
    "unknown target": ({"targets": {"nope": {}}}, 'unknown field "spec.targets.nope"'),
    "too many replicas": ({"defaults": {"replicas": 1000}}, "should be less than or equal to 100"),
    "bad version": ({"version": "1.0 beta"}, "spec.version: Invalid value"),
    "env value and valueFrom": (
        {
            "targets": {
                "secrets": {
                    "env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]
                }
            }
        },
        "set value or valueFrom, not both",
    ),
    "external without secret": (
        {"redis": {"external": {}}},
        "spec.redis.external.urlSecretRef: Required value",
    ),
    "image with a tag": (
        {"image": {"repository": "coderide/coder-platform:1.0"}},
        "image.repository must be a lowercase repository without spaces, tag or digest",
    ),
    "image in upper case": ({"image": {"repository": "CoderIDE/platform"}}, "image.repository must be"),
    "image with spaces": ({"image": {"repository": "coder platform"}}, "image.repository must be"),
    "image with a digest": (
        {"image": {"repository": "coder/platform@sha256:ab12"}},
        "image.repository must be",
    ),
    "bad quantity": (
        {"defaults": {"resources": {"requests": {"cpu": "lots"}}}},
        "spec.defaults.resources.requests.cpu",
    ),
    "memory request above its limit": (
        {"defaults": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}},
        "spec.defaults.resources: Invalid value: a cpu or memory request exceeds its limit",
    ),
    "a request as a plain number above its limit": (
        {
            "postgres": {
                "managed": {"resources": {"requests": {"memory": 2000000000}, "limits": {"memory": "1Gi"}}}
            }
        },
        "spec.postgres.managed.resources: Invalid value: a cpu or memory request exceeds",
    ),
    "a target's memory request above the default limit": (
        {"targets": {"ai": {"resources": {"requests": {"memory": "1Gi"}}}}},  # defaults: limit 512Mi
        "spec.targets.ai.resources: Invalid value: targets.ai.resources: a cpu or memory "
        "request exceeds its limit (after merging spec.defaults.resources)",
    ),
    "a target's memory limit below the default request": (
        {"targets": {"usage": {"resources": {"limits": {"memory": "128Mi"}}}}},  # defaults: request 256Mi
        "targets.usage.resources: a cpu or memory request exceeds its limit",
    ),
    "a target's cpu request above its cpu limit": (
        {"targets": {"gateway": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}}}},
        "targets.gateway.resources: a cpu or memory request exceeds its limit",
    ),
    "a target's autoscaling min above the default max": (
        {"targets": {"gateway": {"autoscaling": {"minReplicas": 8}}}},  # defaults: maxReplicas 5
        "spec.targets.gateway.autoscaling: Invalid value: targets.gateway.autoscaling.minReplicas "
        "must not exceed maxReplicas (after merging spec.defaults.autoscaling)",
    ),
    "a target's autoscaling max below the raised default min": (
        {
            "defaults": {"autoscaling": {"minReplicas": 3}},
            "targets": {"ai": {"autoscaling": {"maxReplicas": 2}}},
        },
        "targets.ai.autoscaling.minReplicas must not exceed maxReplicas",
    ),
    "a target's own autoscaling min above its max": (
        {"targets": {"ai": {"autoscaling": {"minReplicas": 4, "maxReplicas": 3}}}},
        "targets.ai.autoscaling.minReplicas must not exceed maxReplicas",
    ),
    "a trusted proxy that is a name": (
        {"ingress": {"trustedProxies": ["10.0.0.0/8", "ingress-nginx"]}},
        'spec.ingress.trustedProxies[1]: Invalid value: "ingress-nginx": ingress.trustedProxies entries must be '
        "IP addresses or CIDRs",
    ),
    "a trusted proxy with a bad prefix": (
        {"ingress": {"trustedProxies": ["10.0.0.0/33"]}},
        "ingress.trustedProxies entries must be IP addresses or CIDRs",
    ),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
async def test_invalid_specs_are_refused_with_a_readable_message(cluster: Cluster, case: str):
    extra, message = INVALID[case]
    manifest = yaml.safe_load(TEN_LINE_CR)
    manifest["spec"].update(extra)
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert refused.returncode != 0
    for part in (message,) if isinstance(message, str) else message:
        assert part in refused.stderr, refused.stderr


async def test_immutable_fields_cannot_change(cluster: Cluster):
    cluster.apply_cr()
    refused = cluster.kubectl(
        "patch",
        "cp",
        "coder",
        "--type=merge",
        "-p",
        '{"spec":{"postgres":{"managed":{"storage":"50Gi"}}}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "postgres.managed.storage is immutable" in refused.stderr
    # Switching to an external database is allowed (the operator then prunes the StatefulSet).
    cluster.patch_cr({"spec": {"postgres": {"managed": None, "external": {"urlSecretRef": {"name": "pg"}}}}})


async def test_printer_columns(cluster: Cluster):
    cluster.apply_cr()
    await cluster.reconcile()
    header = cluster.kubectl("get", "cp").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "PHASE", "VERSION", "URL", "AGE"]
    wide = cluster.kubectl("get", "cp", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-4:] == ["TARGETS", "MODE", "DESIRED", "PAUSED"]
    assert wide[1].split()[1:3] == ["False", "Pending"]


async def test_image_repositories_with_a_registry_are_accepted(cluster: Cluster):
    for repository in (
        "registry.example.com:5000/coder/platform",
        "localhost:5000/coder",
        "ghcr.io/a-b/c_d.e",
    ):
        manifest = yaml.safe_load(TEN_LINE_CR)
        manifest["spec"]["image"] = {"repository": repository}
        accepted = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
        )
        assert accepted.returncode == 0, (repository, accepted.stderr)


async def test_specs_within_limits_after_merging_are_accepted(cluster: Cluster):
    for extra in (
        # A target's own limit above its request, over the defaults'.
        {"targets": {"ai": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "2Gi"}}}}},
        # Equal is fine; a plain number is bytes.
        {"defaults": {"resources": {"requests": {"memory": 536870912}, "limits": {"memory": "512Mi"}}}},
        # A request with no limit anywhere (the defaults have no cpu limit).
        {"targets": {"gateway": {"resources": {"requests": {"cpu": "4"}}}}},
        # The defaults' own min above its max would be refused; a target raising max is not.
        {"targets": {"gateway": {"autoscaling": {"minReplicas": 5, "maxReplicas": 20}}}},
        {"targets": {"gateway": {"autoscaling": {"maxReplicas": 1, "minReplicas": 1}}}},
        {"ingress": {"trustedProxies": ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "10.1.2.3/8"]}},
    ):
        manifest = yaml.safe_load(TEN_LINE_CR)
        manifest["spec"].update(extra)
        accepted = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest), check=False
        )
        assert accepted.returncode == 0, (extra, accepted.stderr)
