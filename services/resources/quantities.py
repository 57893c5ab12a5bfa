"""Amounts of each resource, read the way Kubernetes writes them: cpu "500m" or 2 (cores) is stored
as millicores, memory and storage "2Gi", "1.5G" or 1073741824 as bytes, sandboxes as a count and AI
credits as money with at most 6 decimals. Parsing is lightkube's (`parse_quantity`); the rules on top
(whole units, bounds) are ours, and a refusal names the resource so the 422 names the field.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from coder.shared.schemas import INT_MAX

MAX_CREDITS = Decimal("1e12")
CREDIT_PLACES = 6
MAX_TEXT = 64


class Resource(StrEnum):
    SANDBOXES = "sandboxes"
    CPU = "cpu"  # millicores
    MEMORY = "memory"  # bytes
    STORAGE = "storage"  # bytes
    AI_CREDITS = "ai_credits"  # money


COUNTED = (Resource.SANDBOXES, Resource.CPU, Resource.MEMORY, Resource.STORAGE)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("must be a number or a quantity string, not a boolean")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    raise ValueError("must be a number or a quantity string")


def _quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2Gi", "1e3") or a plain number, as a bare decimal."""
    if isinstance(value, str):
        # lightkube's package loads its kubeconfig machinery (yaml...): imported on first use only.
        from lightkube.utils.quantity import parse_quantity

        if len(value) > MAX_TEXT:
            raise ValueError(f"at most {MAX_TEXT} characters")
        try:
            parsed = parse_quantity(value.strip())
        except (ValueError, ArithmeticError):
            parsed = None
        if parsed is None:
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 512M)")
        return parsed
    return _decimal(value)


def parse(resource: Resource, value: Any) -> int | Decimal:
    """`value` in the resource's stored unit (millicores, bytes, a count, money); ValueError says why not."""
    try:
        if resource is Resource.AI_CREDITS:
            amount = _decimal(Decimal(value) if isinstance(value, str) and len(value) <= MAX_TEXT else value)
            if not amount.is_finite() or amount < 0 or amount > MAX_CREDITS:
                raise ValueError(f"must be between 0 and {MAX_CREDITS:f}")
            if amount != amount.quantize(Decimal(1).scaleb(-CREDIT_PLACES)):
                raise ValueError(f"at most {CREDIT_PLACES} decimals")
            return amount.quantize(Decimal(1).scaleb(-CREDIT_PLACES))
        if resource is Resource.SANDBOXES:
            amount = _decimal(value)
        else:
            amount = _quantity(value)
            if resource is Resource.CPU:
                amount *= 1000  # cores to millicores
        if not amount.is_finite() or amount < 0:
            raise ValueError("must not be negative")
        if amount != amount.to_integral_value():
            unit = {Resource.CPU: "1m (a millicore)", Resource.SANDBOXES: "1"}.get(resource, "1 byte")
            raise ValueError(f"must be a whole number of {unit}")
        if amount > INT_MAX:
            raise ValueError("too large")
        return int(amount)
    except InvalidOperation:
        raise ValueError("must be a number or a quantity string") from None


def display(resource: Resource, amount: int | Decimal) -> str:
    """An amount as a person reads it in a refusal: cpu `1500m`, memory `2Gi`, credits `12.5`."""
    if resource is Resource.CPU:
        return f"{amount}m"
    if resource in (Resource.MEMORY, Resource.STORAGE):
        for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if amount and amount % size == 0:
                return f"{amount // size}{suffix}"
        return f"{amount}"
    if resource is Resource.AI_CREDITS:
        return f"{Decimal(amount).normalize():f}"
    return str(amount)
