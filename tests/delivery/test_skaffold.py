"""skaffold.yaml, checked with skaffold itself (built from its Go module by tools/build-skaffold.sh):
the config loads and validates against skaffold's schema, and what `skaffold render` produces for
the default and the dev profile is accepted by a real API server. No image is built: there is no
container engine here, so `render` uses the tag skaffold would give the image (git commit)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from coder.operator import crd, names
from coder.runner import registry
from coder.tests.delivery import dockerfile
from coder.tests.delivery.conftest import REPO, Cluster, cluster, documents

IMAGE = "coderide/coder-platform"


@pytest.fixture(scope="module")
def skaffold_cluster() -> Iterator[Cluster]:
    with cluster() as c:
        # The dry run of a CoderPlatform needs its CRD served (skaffold's first release installs it).
        c.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd.crd_manifest()))
        c.wait_crd()
        for namespace in ("coder-system", "coder"):
            c.create_namespace(namespace)
        yield c


@pytest.fixture(scope="module")
def skaffold_bin() -> Path:
    built = subprocess.run(
        ["bash", str(REPO / "tools" / "build-skaffold.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return Path(built.stdout.strip().splitlines()[-1]) / "skaffold"


def skaffold(c: Cluster, binary: Path, *args: str, tmp: Path) -> str:
    env = {
        **c.cp.env(),  # KUBECONFIG of the test control plane, helm on PATH
        "HOME": str(tmp),  # skaffold keeps its global config under ~/.skaffold
        "SKAFFOLD_UPDATE_CHECK": "false",
        "SKAFFOLD_INTERACTIVE": "false",
        "SKAFFOLD_COLLECT_METRICS": "false",
    }
    proc = subprocess.run(
        [str(binary), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    print(f"$ skaffold {' '.join(args)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def effective_config(c: Cluster, binary: Path, tmp: Path, *profile: str) -> dict[str, Any]:
    """The config after profiles are applied, as skaffold parsed and validated it."""
    out = skaffold(c, binary, "diagnose", "--yaml-only", *profile, tmp=tmp)
    return yaml.safe_load(out)


def rendered(c: Cluster, binary: Path, tmp: Path, *profile: str) -> list[dict[str, Any]]:
    return documents(
        skaffold(c, binary, "render", "--offline=true", "--digest-source=tag", *profile, tmp=tmp)
    )


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_skaffold_is_built_from_its_module(skaffold_bin: Path):
    out = subprocess.run([str(skaffold_bin), "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "v2.16.1"


def test_default_profile_deploys_both_charts_with_the_built_tag(
    skaffold_cluster: Cluster, skaffold_bin: Path, tmp_path: Path
):
    c = skaffold_cluster
    config = effective_config(c, skaffold_bin, tmp_path)
    assert config["build"]["artifacts"][0]["image"] == IMAGE
    # diagnose prints the paths resolved against the config's directory.
    assert [str(Path(r["chartPath"]).relative_to(REPO)) for r in config["deploy"]["helm"]["releases"]] == [
        "charts/coder-operator",
        "charts/coder-platform",
    ]
    objects = rendered(c, skaffold_bin, tmp_path)
    (operator,) = by_kind(objects, "Deployment")
    image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
    repository, tag = image.rsplit(":", 1)
    assert repository == IMAGE
    (platform,) = by_kind(objects, names.KIND)
    assert platform["spec"]["version"] == tag  # the platform runs the image just built
    assert platform["spec"].get("image", {}).get("repository", IMAGE) == IMAGE
    out = c.dry_run(yaml.safe_dump_all(objects))
    assert "(server dry run)" in out


def test_dev_profile_syncs_the_operator_and_forwards_the_gateway(
    skaffold_cluster: Cluster, skaffold_bin: Path, tmp_path: Path
):
    c = skaffold_cluster
    config = effective_config(c, skaffold_bin, tmp_path, "-p", "dev")
    artifact = config["build"]["artifacts"][0]
    rules = artifact["sync"]["manual"]
    workdir = dockerfile.parse(REPO / "Dockerfile").stages[-1].last("WORKDIR").rest
    for rule in rules:
        assert rule["dest"] == workdir
        assert list(REPO.glob(rule["src"])), f"{rule['src']} matches no file"
    # The synced files land in a tree the container user may write only in the dev build.
    assert artifact["docker"]["buildArgs"] == {"APP_OWNER": "10001"}
    assert "ARG APP_OWNER=0" in (REPO / "Dockerfile").read_text()
    (forward,) = config["portForward"]
    gateway = registry.descriptors()["gateway"]
    platform_release = config["deploy"]["helm"]["releases"][1]
    assert forward["resourceName"] == names.child_name(platform_release["name"], "gateway")
    assert forward["namespace"] == platform_release["namespace"]
    assert forward["port"] == gateway.port

    objects = rendered(c, skaffold_bin, tmp_path, "-p", "dev")
    (operator,) = by_kind(objects, "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "watchfiles"
    assert container["securityContext"]["readOnlyRootFilesystem"] is False
    (platform,) = by_kind(objects, names.KIND)
    assert (platform["spec"]["mode"], platform["spec"]["environment"]) == ("monolithic", "development")
    out = c.dry_run(yaml.safe_dump_all(objects))
    assert "(server dry run)" in out
