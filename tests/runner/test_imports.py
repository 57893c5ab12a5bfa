"""What a command imports: listings read descriptors only, a process loads only its own targets' wiring.

Each case runs in a fresh interpreter (the test process itself has imported everything) and reads
`sys.modules` there once the command is done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coder.runner import registry

ROOT = Path(__file__).resolve().parents[2]

# Runs one entry point, then writes {"exit": code, "modules": [...]} to the file named first.
PROBE = """
import json, runpy, sys

out, kind, *args = sys.argv[1:]
code = 0
if kind == "cli":
    from coder.runner.cli import main

    sys.argv = ["coder-platform", *args]
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
elif kind == "generate":
    generate = runpy.run_path(args[0], run_name="generate")
    generate["values_schema"]()
    generate["crd"].crd_manifest()
    generate["deploy"].files()
elif kind == "process":
    from coder.runner import registry
    from coder.runner.process import build_process_app
    from coder.shared.settings import PlatformSettings

    build_process_app(PlatformSettings(), registry.resolve(args[0]))
with open(out, "w") as f:
    json.dump({"exit": code, "modules": sorted(sys.modules)}, f)
"""

# Web and database frameworks, brokers, servers: what a listing has no use for.
FRAMEWORKS = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "asyncpg",
    "aio_pika",
    "aiormq",
    "redis",
    "fakeredis",
    "uvicorn",
    "kopf",
    "lightkube",
)


def _imported(tmp_path: Path, kind: str, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {**os.environ, "CODER_ENVIRONMENT": "development"}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", PROBE, str(out), kind, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["exit"] == 0, proc.stderr
    return set(result["modules"])


def _wiring_of(modules: set[str], names: set[str]) -> set[str]:
    """Modules of these targets' packages other than the package itself and its descriptor."""
    found = set()
    for name in names:
        package = registry.PACKAGES[name]
        found |= {
            m
            for m in modules
            if m.startswith(f"{package}.") and m not in {f"{package}.descriptor"} and m != package
        }
    return found


def _frameworks(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in FRAMEWORKS}


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("cli", ["--help"]),
        ("cli", ["targets"]),
        ("cli", ["targets", "--json"]),
        ("cli", ["operator", "--help"]),
        ("cli", ["operator", "crd"]),
        ("cli", ["operator", "manifests"]),
        ("generate", [str(ROOT / "charts" / "generate.py")]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_listings_and_generation_read_descriptors_only(tmp_path: Path, kind: str, args: list[str]) -> None:
    modules = _imported(tmp_path, kind, *args)
    assert _frameworks(modules) == set()
    assert _wiring_of(modules, set(registry.PACKAGES)) == set()
    assert not any(m.startswith("coder.runner.process") for m in modules)
    if "--help" not in args:
        assert {f"{p}.descriptor" for p in registry.PACKAGES.values()} <= modules


@pytest.mark.parametrize("name", list(registry.PACKAGES))
def test_a_process_loads_only_its_own_targets_wiring(tmp_path: Path, name: str) -> None:
    modules = _imported(tmp_path, "process", name)
    assert f"{registry.PACKAGES[name]}.target" in modules
    assert _wiring_of(modules, set(registry.PACKAGES) - {name}) == set()


# Libraries a target needs for some requests only: its first such request loads them, not its start.
ON_FIRST_USE = {"mcp": {"mcp", "mcp_types"}}


@pytest.mark.parametrize("name", list(ON_FIRST_USE))
def test_a_process_loads_some_libraries_at_first_use(tmp_path: Path, name: str) -> None:
    modules = _imported(tmp_path, "process", name)
    assert {m.split(".")[0] for m in modules} & ON_FIRST_USE[name] == set()
