"""The registry is the one source of truth: ports from DESIGN.md, tables prefixed by their target."""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint

from coder.shared import registry

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
    for name, target in registry.all_targets().items():
        assert target.port == DESIGN_PORTS[name], name


def test_every_table_and_constraint_is_prefixed_by_its_target() -> None:
    for name, target in registry.all_targets().items():
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
    for name, target in registry.all_targets().items():
        if target.metadata is not None:
            assert list(target.migrations_dir.glob("*.py")), f"{name} has no migrations"


def test_resolve_selects_in_registry_order() -> None:
    assert list(registry.resolve("all")) == list(registry.TARGET_MODULES)
    assert list(registry.resolve("secrets, gateway")) == ["gateway", "secrets"]


def test_unknown_target_is_refused() -> None:
    import pytest

    with pytest.raises(KeyError, match="unknown target 'nope'"):
        registry.resolve("nope")
