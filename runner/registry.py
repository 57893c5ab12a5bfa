"""The one registry of run targets. A new service is its package plus one line here.

Each package named below has `descriptor.py` (data: `descriptor: Descriptor`) and `target.py`
(wiring: `target: Target`). Listings, the operator, the CRD and the charts read descriptors only;
a process imports the wiring of the targets it serves and no other.
"""

from __future__ import annotations

import importlib
from functools import cache

from coder.shared.target import Descriptor, Target

PACKAGES: dict[str, str] = {
    "gateway": "coder.gateway",
    "secrets": "coder.services.secrets",
    "usage": "coder.services.usage",
    "mcp": "coder.services.mcp",
    "calendar": "coder.services.calendar",
    "planning": "coder.services.planning",
    "resources": "coder.services.resources",
    "ai": "coder.services.ai",
    "embeddings": "coder.services.embeddings",
    "logging": "coder.services.logging",
    "learning": "coder.services.learning",
    "dashboard": "coder.services.dashboard",
    "quality": "coder.services.quality",
    "collaboration": "coder.services.collaboration",
    "observability": "coder.services.observability",
    "workflow": "coder.services.workflow",
    "messaging": "coder.services.messaging",
    "execution": "coder.services.execution",
    "knowledge": "coder.services.knowledge",
}

ALL = "all"


def _unknown(name: str) -> KeyError:
    return KeyError(f"unknown target {name!r}; known: {', '.join(PACKAGES)}")


@cache
def descriptors() -> dict[str, Descriptor]:
    """Every target's description, in registry order; imports `<package>.descriptor` only."""
    out: dict[str, Descriptor] = {}
    for name, package in PACKAGES.items():
        descriptor: Descriptor = importlib.import_module(f"{package}.descriptor").descriptor
        if (descriptor.name, descriptor.package) != (name, package):
            raise RuntimeError(
                f"{package}.descriptor describes {descriptor.name!r} in {descriptor.package!r}, "
                f"expected {name!r} in {package!r}"
            )
        out[name] = descriptor
    return out


def wiring(name: str) -> Target:
    """One target's wiring: imports `<package>.target` (its routes, tables, consumers)."""
    if name not in PACKAGES:
        raise _unknown(name)
    target: Target = importlib.import_module(f"{PACKAGES[name]}.target").target
    if target.descriptor is not descriptors()[name]:
        raise RuntimeError(f"{PACKAGES[name]}.target wires another descriptor than {name!r}'s")
    return target


def select(selection: str) -> list[str]:
    """`all` or a comma-separated list of names -> the names, in registry order."""
    names = (
        list(PACKAGES) if selection.strip() == ALL else [n.strip() for n in selection.split(",") if n.strip()]
    )
    if not names:
        raise KeyError("no target selected")
    for name in names:
        if name not in PACKAGES:
            raise _unknown(name)
    return [name for name in PACKAGES if name in names]


def resolve(selection: str) -> dict[str, Target]:
    """The wiring of the selected targets, in registry order."""
    return {name: wiring(name) for name in select(selection)}
