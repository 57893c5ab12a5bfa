"""A target's wiring may not disagree with its descriptor about what it consumes."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from coder.shared.events import CloudEvent, EventContext
from coder.shared.target import Descriptor, Target, service_urls

DESCRIPTOR = Descriptor(
    name="probe", port=39997, title="Probe", package="coder.tests.shared", consumes=("a.thing.happened",)
)


async def handle(event: CloudEvent, context: EventContext) -> None:
    return None


def test_wiring_reads_its_descriptor() -> None:
    target = Target(DESCRIPTOR, APIRouter(), consumes={"a.thing.happened": handle})
    assert (target.name, target.port, target.package) == ("probe", 39997, "coder.tests.shared")
    assert target.migrations_dir == DESCRIPTOR.migrations_dir
    assert target.migrations_dir.parts[-3:] == ("tests", "shared", "migrations")


@pytest.mark.parametrize(
    "handlers", [{}, {"a.thing.happened": handle, "b.thing.happened": handle}, {"b.thing.happened": handle}]
)
def test_handlers_must_match_what_the_descriptor_consumes(handlers: dict) -> None:
    with pytest.raises(ValueError, match="descriptor consumes"):
        Target(DESCRIPTOR, APIRouter(), consumes=handlers)


def test_one_table_of_service_urls_for_the_runtime_up_and_the_operator() -> None:
    ports = {"gateway": 3000, "usage": 3004}
    # The runtime: each target's Service name unless CODER_SERVICE_URLS says otherwise.
    assert service_urls(ports, given={"usage": "http://elsewhere:9"}) == {
        "gateway": "http://gateway:3000",
        "usage": "http://elsewhere:9",
    }
    # `up`: every target on one loopback host; the operator: each Service in its namespace.
    assert service_urls(ports, host=lambda _name: "127.0.0.1")["usage"] == "http://127.0.0.1:3004"
    assert (
        service_urls(ports, host=lambda name: f"coder-{name}.ns.svc")["usage"]
        == "http://coder-usage.ns.svc:3004"
    )
