"""Event contracts stay readable by the consumers of every released version.

`snapshots/<event type>.v<version>.json` keeps the JSON Schema of each released contract version.
The current version's schema must equal its snapshot (a change needs a new `schema_version`, and
`UPDATE_CONTRACT_SNAPSHOTS=1` writes its snapshot); every older snapshot must be readable from the
current schema: no required field removed or renamed, no field's type changed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from coder.runner import registry
from coder.shared.contracts import Contract, declared, event_schemas

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
CONTRACTS = declared()


def _shape(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """What a field's type is, without its wording (title, description) or bounds."""
    if "$ref" in schema:
        return _shape(root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
    if "anyOf" in schema:
        return sorted(json.dumps(_shape(s, root), sort_keys=True) for s in schema["anyOf"])
    return {key: schema[key] for key in ("type", "format", "enum", "const") if key in schema}


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How `new` breaks a consumer written against `old` (empty when it does not)."""
    problems = []
    old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
    for name in old.get("required", []):
        if name not in new_fields:
            problems.append(f"required field {name!r} removed or renamed")
        elif name not in new.get("required", []):
            problems.append(f"required field {name!r} became optional")
    for name, field in old_fields.items():
        if name in new_fields and _shape(field, old) != _shape(new_fields[name], new):
            problems.append(f"field {name!r} changed type")
    return problems


def _snapshots(event_type: str) -> dict[int, dict[str, Any]]:
    found = {}
    for path in SNAPSHOTS.glob(f"{event_type}.v*.json"):
        match = re.fullmatch(rf"{re.escape(event_type)}\.v(\d+)\.json", path.name)
        if match:
            found[int(match.group(1))] = json.loads(path.read_text())
    return found


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=list(CONTRACTS))
def test_the_current_version_is_snapshotted(contract: type[Contract]) -> None:
    path = SNAPSHOTS / f"{contract.event_type}.v{contract.schema_version}.json"
    schema = contract.json_schema()
    if os.environ.get("UPDATE_CONTRACT_SNAPSHOTS") and not path.exists():
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot of {path.name}: run with UPDATE_CONTRACT_SNAPSHOTS=1"
    assert json.loads(path.read_text()) == schema, (
        f"{contract.event_type} v{contract.schema_version} changed after release: bump its schema_version"
    )


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=list(CONTRACTS))
def test_every_released_version_is_still_readable(contract: type[Contract]) -> None:
    released = _snapshots(contract.event_type)
    assert max(released) == contract.schema_version
    for version, old in released.items():
        assert breaking_changes(old, contract.json_schema()) == [], f"breaks v{version}"


def test_breaking_changes_are_found() -> None:
    old: dict[str, Any] = {
        "properties": {
            "path": {"type": "string"},
            "version": {"type": "integer"},
            "note": {"type": "string"},
        },
        "required": ["path", "version"],
    }
    compatible: dict[str, Any] = {
        "properties": {**old["properties"], "extra": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["path", "version", "extra"],
    }
    assert breaking_changes(old, compatible) == []
    renamed = {
        "properties": {"secret_path": {"type": "string"}, "version": {"type": "integer"}},
        "required": [],
    }
    assert "required field 'path' removed or renamed" in breaking_changes(old, renamed)
    retyped = {**old, "properties": {**old["properties"], "version": {"type": "string"}}}
    assert breaking_changes(old, retyped) == ["field 'version' changed type"]
    nullable = {
        **old,
        "properties": {**old["properties"], "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    }
    assert breaking_changes(old, nullable) == ["field 'note' changed type"]


def test_descriptors_publish_the_contracts_of_their_events() -> None:
    for name, descriptor in registry.descriptors().items():
        for event_type in (*descriptor.emits, *descriptor.consumes):
            assert event_type in CONTRACTS, f"{name}: {event_type} has no contract in coder.shared.contracts"
        assert descriptor.event_schemas == event_schemas(*(CONTRACTS[kind] for kind in descriptor.emits)), (
            name
        )
