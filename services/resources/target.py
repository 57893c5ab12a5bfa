from __future__ import annotations

import asyncio
import logging

from pydantic_settings import SettingsConfigDict

from coder.services.resources.api import router
from coder.services.resources.descriptor import descriptor
from coder.services.resources.models import Base
from coder.services.resources.reservations import clock, expire
from coder.shared.runtime import Runtime
from coder.shared.settings import TargetSettings
from coder.shared.target import Target

log = logging.getLogger(__name__)


class ResourcesSettings(TargetSettings):
    model_config = SettingsConfigDict(env_prefix="RESOURCES_", extra="ignore")

    # How often lapsed reservations are marked expired. They stop counting at their expiry anyway;
    # this only keeps `status` honest for queries that do not compare times.
    reap_interval_seconds: float = 30.0


async def reaper(runtime: Runtime) -> None:
    interval = runtime.config(ResourcesSettings).reap_interval_seconds
    while True:
        try:
            if expired := await expire(runtime.sessions, clock()):
                log.info("expired lapsed reservations", extra={"count": expired})
        except Exception:
            log.exception("reaping lapsed reservations failed; trying again later")
        await asyncio.sleep(interval)


target = Target(
    descriptor=descriptor,
    router=router,
    metadata=Base.metadata,
    events=Base.events,
    settings=ResourcesSettings,
    background=(reaper,),
)
