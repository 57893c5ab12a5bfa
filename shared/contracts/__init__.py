"""Event payload contracts: the `data` of each CloudEvent type, declared once by its producer
(`shared/contracts/<producer>.py`) and imported by its consumers.

A contract is a pydantic model with its `event_type` and a `schema_version`. The producer's outbox checks
every payload it stages against the contract of its type; a consumer validates what it receives with
the same model; the producer's descriptor publishes the JSON Schema (`event_schemas`). Changing a
contract in a way an existing consumer cannot read (a required field removed or renamed, a type
changed) is refused by tests/shared/contracts, which keeps the schema of every released version.
Such a change is a new event type (`<noun>.<verb>.v2`), published alongside the old one until no
consumer is left.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel


class Contract(BaseModel):
    """The `data` of one event type. Subclasses set `event_type` and `schema_version` (bumped on any
    schema change that stays backward compatible: a new optional field, a relaxed bound)."""

    event_type: ClassVar[str]
    schema_version: ClassVar[int]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        declared = _DECLARED.setdefault(cls.event_type, cls)
        if declared is not cls:
            raise TypeError(
                f"{cls.event_type} is declared twice: {declared.__qualname__}, {cls.__qualname__}"
            )

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.model_json_schema(mode="serialization")
        schema["x-event-type"] = cls.event_type
        schema["x-version"] = cls.schema_version
        return schema


_DECLARED: dict[str, type[Contract]] = {}


def event_schemas(*contracts: type[Contract]) -> Mapping[str, Mapping[str, Any]]:
    """`Descriptor.event_schemas` from the contracts a target emits."""
    return {contract.event_type: contract.json_schema() for contract in contracts}


def contract_of(event_type: str) -> type[Contract] | None:
    """The contract of `event_type`: its producer's module here is imported on first ask (a contract
    declared elsewhere, by a test's target, is found once its module is imported)."""
    if event_type not in _DECLARED:
        module = f"{__name__}.{event_type.split('.', 1)[0]}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return _DECLARED.get(event_type)


def declared() -> dict[str, type[Contract]]:
    """Every contract of this package, by event type."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return {
        kind: contract for kind, contract in _DECLARED.items() if contract.__module__.startswith(__name__)
    }
