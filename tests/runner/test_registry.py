"""The registry is the one source of truth: ports from DESIGN.md, tables prefixed by their target,
descriptors that say what the wiring does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Index, UniqueConstraint

from coder.runner import registry

DESIGN_PORTS = {
    "gateway": 3000,
    "secrets": 3003,
    "usage": 3004,
    "embeddings": 3005,
    "ai": 3006,
    "planning": 3007,
    "execution": 3008,
    "mcp": 3009,
    "knowledge": 3010,
    "dashboard": 3011,
    "calendar": 3012,
    "messaging": 3013,
    "logging": 3014,
    "learning": 3015,
    "collaboration": 3016,
    "quality": 3017,
    "resources": 3018,
    "workflow": 3019,
    "observability": 3020,
}


def test_ports_match_the_design() -> None:
    for name, target in registry.descriptors().items():
        assert target.port == DESIGN_PORTS[name], name


def test_every_table_and_constraint_is_prefixed_by_its_target() -> None:
    for name, target in registry.resolve("all").items():
        if target.metadata is None:
            continue
        prefix = f"{name}_"
        assert target.metadata.tables, f"{name} declares metadata without tables"
        for table in target.metadata.tables.values():
            assert table.name.startswith(prefix), f"{table.name} belongs to {name}"
            for thing in [*table.indexes, *table.constraints]:
                item = getattr(thing, "name", None)
                if isinstance(thing, Index | UniqueConstraint) or item:
                    assert str(item).startswith(prefix), f"{item} on {table.name}"


def test_every_target_with_tables_has_migrations() -> None:
    for name, target in registry.resolve("all").items():
        if target.metadata is not None:
            assert list(target.migrations_dir.glob("*.py")), f"{name} has no migrations"


def test_resolve_selects_in_registry_order() -> None:
    assert list(registry.resolve("all")) == list(registry.PACKAGES)
    assert list(registry.resolve("secrets, gateway")) == ["gateway", "secrets"]
    assert registry.select(" usage ,secrets") == ["secrets", "usage"]


def test_unknown_target_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown target 'nope'"):
        registry.resolve("nope")
    with pytest.raises(KeyError, match="unknown target 'nope'"):
        registry.wiring("nope")
    with pytest.raises(KeyError, match="no target selected"):
        registry.select(" , ")


def test_wiring_carries_its_descriptor() -> None:
    for name, descriptor in registry.descriptors().items():
        target = registry.wiring(name)
        assert target.descriptor is descriptor
        assert set(target.consumes) == set(descriptor.consumes)


# `"<target>:<action>"` as the code spells a permission it checks (require(...), roles.py constants).
PERMISSION_LITERAL = re.compile(r'"([a-z][a-z0-9-]*):([a-z][a-z0-9._-]*)"')
# `events.publish(session, "<type>", ...)`: the event types a target's code emits.
PUBLISHED = re.compile(r'\.publish\(\s*\w+,\s*"([a-z][a-z0-9._-]*)"')


def _sources(package: str) -> str:
    root = Path(__file__).resolve().parents[2] / package.removeprefix("coder.").replace(".", "/")
    return "\n".join(p.read_text() for p in sorted(root.rglob("*.py")) if "migrations" not in p.parts)


def test_descriptors_name_every_permission_their_code_checks() -> None:
    for name, descriptor in registry.descriptors().items():
        code = _sources(descriptor.package)
        checked = {action for target, action in PERMISSION_LITERAL.findall(code) if target == name}
        assert set(descriptor.permissions) == checked, name
        for action, permission in descriptor.permissions.items():
            line = permission.description
            assert line.strip() and "\n" not in line, f"{name}:{action} needs a one-line description"


def test_descriptors_name_every_event_their_code_emits() -> None:
    for name, descriptor in registry.descriptors().items():
        emitted = set(PUBLISHED.findall(_sources(descriptor.package)))
        assert set(descriptor.emits) == emitted, name
        assert all(kind.startswith(f"{name}.") for kind in descriptor.emits), name
