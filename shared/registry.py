"""The one registry of run targets. A new service is its package plus one line here.

Each module named below defines `target: Target`. The CLI, the gateway, migrations and the operator
all read this list, so ports and dependencies have one source of truth.
"""

from __future__ import annotations

import importlib
from functools import cache

from coder.shared.target import Target

TARGET_MODULES: dict[str, str] = {
    "gateway": "coder.gateway.target",
    "secrets": "coder.services.secrets.target",
    "usage": "coder.services.usage.target",
}

ALL = "all"


def load(name: str) -> Target:
    try:
        module = TARGET_MODULES[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGET_MODULES)}") from None
    target: Target = importlib.import_module(module).target
    if target.name != name:
        raise RuntimeError(f"{module} registers {target.name!r}, expected {name!r}")
    return target


@cache
def all_targets() -> dict[str, Target]:
    return {name: load(name) for name in TARGET_MODULES}


def resolve(selection: str) -> dict[str, Target]:
    """`all` or a comma-separated list of names -> the targets, in registry order."""
    names = (
        list(TARGET_MODULES)
        if selection.strip() == ALL
        else [n.strip() for n in selection.split(",") if n.strip()]
    )
    if not names:
        raise KeyError("no target selected")
    for name in names:
        if name not in TARGET_MODULES:
            raise KeyError(f"unknown target {name!r}; known: {', '.join(TARGET_MODULES)}")
    everything = all_targets()
    return {name: everything[name] for name in TARGET_MODULES if name in names}
