"""Events from the bus, and the retention sweep."""

from __future__ import annotations

import asyncio
import logging

from coder.services.logging import service
from coder.services.logging.config import LoggingSettings
from coder.shared.contracts.secrets import SecretFingerprinted
from coder.shared.db import transaction
from coder.shared.events import CloudEvent, EventContext
from coder.shared.runtime import Runtime

log = logging.getLogger(__name__)


async def on_secret_fingerprinted(event: CloudEvent, context: EventContext) -> None:
    """Keep the fingerprints of a value just stored in `secrets`: from now on a pushed line holding
    that value has it redacted. Malformed events raise and end in the dead-letter queue."""
    if not event.orgid:
        raise ValueError(f"event {event.id} has no orgid")
    data = event.data_as(SecretFingerprinted)
    found = [(bytes.fromhex(f.digest), f.length) for f in data.fingerprints]
    await service.store_fingerprints(context.session, event.orgid, found)


async def retention(runtime: Runtime) -> None:
    """Every `retention_interval_seconds`, delete the lines each org's retention no longer keeps.
    Replicas may sweep at once: the deletes are idempotent."""
    settings = runtime.config(LoggingSettings)
    while True:
        try:
            async with transaction(runtime.sessions) as session:
                deleted = await service.apply_retention(session, settings)
            if deleted:
                log.info("retention deleted log lines", extra={"deleted": deleted})
        except Exception:
            log.exception("retention sweep failed; retrying at the next interval")
        await asyncio.sleep(settings.retention_interval_seconds)
