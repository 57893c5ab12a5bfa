"""Whether a child must be applied: the desired manifest compared with the object as stored.

Two checks, both needed for zero writes when nothing changed and a write whenever something did:
- the spec hash annotation: any change of the desired object (including a removed field, which a
  subset comparison cannot see) changes it;
- a subset comparison of the desired fields with the stored ones: a hand edit or a deleted field
  shows up, while the fields the API server adds (defaults, status, clusterIP...) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from coder.operator import names
from coder.operator.builders import digest

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def with_spec_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest with the hash of itself in an annotation (what is compared next time)."""
    meta = dict(manifest["metadata"])
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k != names.SPEC_HASH_ANNOTATION}
    unhashed = {**manifest, "metadata": {**meta, "annotations": annotations}}
    meta["annotations"] = {**annotations, names.SPEC_HASH_ANNOTATION: digest(unhashed)}
    return {**manifest, "metadata": meta}


def needs_apply(desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
    """True when `desired` (already carrying its spec hash) differs from the stored `actual`."""
    if actual is None:
        return True
    want = desired["metadata"].get("annotations", {}).get(names.SPEC_HASH_ANNOTATION)
    have = (actual.get("metadata") or {}).get("annotations", {}).get(names.SPEC_HASH_ANNOTATION)
    return want != have or not contains(actual, desired)


def quantity(value: Any) -> Decimal | None:
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIXES:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    # The API server drops empty maps and lists and omitted booleans read as false.
    return value is None or value is False or value == {} or value == []


def contains(actual: Any, desired: Any, path: tuple[str, ...] = ()) -> bool:
    """Whether every field of `desired` has the same value in `actual`."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(
            (key not in actual and _empty(value)) or contains(actual.get(key), value, (*path, key))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return not desired and actual is None
        if all(not isinstance(item, Mapping | list) for item in desired):
            # Lists of scalars (command, args, accessModes) are atomic: the apply replaces them.
            return bool(actual == desired)
        # Lists of objects (ports, containers, env, volumes...): exactly the desired items, in order.
        # An item someone else added (a port, a sidecar, an env var) is drift: server-side apply
        # would keep it, so the reconciler replaces the object (see reconcile._apply_one).
        return len(actual) == len(desired) and all(
            contains(have, want, path) for have, want in zip(actual, desired, strict=True)
        )
    if desired == actual:
        return True
    # Quantities come back canonical ("0.5" is stored as "500m"): compare their values.
    if "resources" in path or path[-1:] == ("storage",):
        want, have = quantity(desired), quantity(actual)
        return want is not None and want == have
    return False
