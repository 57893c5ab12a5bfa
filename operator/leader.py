"""Leader election on a coordination.k8s.io Lease, so that two operator replicas are safe.

What client-go's leaderelection does, in a few calls: a replica reconciles only while it holds the
Lease; it renews it every `renew_seconds`; the others poll it and take it over once its holder has
not renewed for `lease_seconds` (measured on their own clock from when they saw the last change,
so clock skew between nodes does not matter). Updates carry the resourceVersion they read, so two
replicas racing for an expired Lease cannot both win. A replica that cannot renew in time stops
(the pod restarts and queues as a standby); one that stops cleanly hands the Lease over at once.

The standby waits before kopf starts at all: it watches nothing and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger("coder.operator")

LEASE_NAME = "coder-operator"


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass
class Elector:
    client: AsyncClient
    namespace: str
    name: str = LEASE_NAME
    identity: str = field(default_factory=default_identity)
    lease_seconds: int = 15
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0
    # The holder and renewTime last seen, and when (monotonic) they were first seen so.
    _seen: tuple[str | None, str | None] = (None, None)
    _seen_at: float = 0.0

    async def try_acquire(self) -> bool:
        """Take or renew the Lease; False while another live replica holds it."""
        now = dt.datetime.now(dt.UTC)
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            fresh = Lease(
                metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                spec=LeaseSpec(
                    holderIdentity=self.identity,
                    leaseDurationSeconds=self.lease_seconds,
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            return await self._write(self.client.create(fresh))
        spec = lease.spec or LeaseSpec()
        record = (spec.holderIdentity, spec.renewTime.isoformat() if spec.renewTime else None)
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        mine = spec.holderIdentity == self.identity
        duration = spec.leaseDurationSeconds or self.lease_seconds
        expired = not spec.holderIdentity or time.monotonic() - self._seen_at > duration
        if not (mine or expired):
            return False
        if not mine:
            log.info("taking the Lease %s/%s over from %r", self.namespace, self.name, spec.holderIdentity)
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity, spec.leaseDurationSeconds, spec.renewTime = (
            self.identity,
            self.lease_seconds,
            now,
        )
        lease.spec = spec
        return await self._write(self.client.replace(lease))

    async def _write(self, call: asyncio.Future | object) -> bool:
        try:
            await call  # type: ignore[misc]
        except ApiError as exc:
            if exc.status.code == 409:  # another replica wrote first
                return False
            raise
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this replica leads (True) or `stop` is set (False)."""
        log.info("waiting to lead (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
        while not stop.is_set():
            try:
                if await self.try_acquire():
                    log.info("leading as %s", self.identity)
                    return True
            except Exception:
                log.warning("cannot read or write the Lease %s/%s", self.namespace, self.name, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_seconds)
        return False

    async def keep(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Renew until `stop`; when a renewal is overdue, set `lost` and `stop` (the replica quits)."""
        renewed = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.renew_seconds)
                return
            except TimeoutError:
                pass
            try:
                if await self.try_acquire():
                    renewed = time.monotonic()
                    continue
                log.error("the Lease %s/%s was taken over; stopping", self.namespace, self.name)
            except Exception:
                if time.monotonic() - renewed < self.lease_seconds - self.renew_seconds:
                    log.warning("cannot renew the Lease; retrying", exc_info=True)
                    continue
                log.exception("cannot renew the Lease in time; stopping")
            lost.set()
            stop.set()
            return

    async def release(self) -> None:
        """Hand the Lease over now (a clean stop): the standby need not wait for it to expire."""
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec is None or lease.spec.holderIdentity != self.identity:
                return
            lease.spec.holderIdentity = None
            lease.spec.renewTime = None
            lease.spec.acquireTime = None
            await self.client.replace(lease)
        except Exception:
            log.warning("cannot release the Lease %s/%s", self.namespace, self.name, exc_info=True)
