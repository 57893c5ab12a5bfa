"""The kopf side: settings, login, short change handlers, and the periodic resync.

Create/update/resume handlers are edge-triggered; the resync loop makes the operator
level-triggered (drift, readiness and the migration gate are picked up on the next pass). The
resync is an operator-wide task rather than a kopf timer because kopf puts a finalizer on every
object with a timer, and a CoderPlatform must stay deletable while the operator is away: the
garbage collector removes its children. What it has outside its namespace (the sandbox namespace and
the Role there, which no owner reference reaches) is removed when the operator sees the deletion,
and otherwise by the sweep at the end of each resync: level-triggered too, without a finalizer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
from lightkube import KubeConfig

from coder.operator import metrics, names
from coder.operator.kube import Kube
from coder.operator.options import Options
from coder.operator.reconcile import reconcile, remove_sandbox

RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
log = logging.getLogger("coder.operator")


def configure(settings: kopf.OperatorSettings) -> None:
    # One replica, no peering objects: a second operator would need peering to stay idle.
    settings.peering.standalone = True
    # Events are posted by the reconciler itself (events.k8s.io/v1, on transitions and writes),
    # never from log lines: an idle resync must not write anything, Events included.
    settings.posting.enabled = False
    # Watches: the server ends each stream after 5 minutes, the client gives up a little later,
    # and a stream silent for longer than the bookmark interval (60 s) plus jitter is re-opened.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    # Only CoderPlatforms are watched: no runtime scan of CRDs and namespaces (and no RBAC for it).
    settings.scanning.disabled = True
    # kopf's bookkeeping in annotations under our group, never in status (which the schema prunes).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )


def connection_info(path: str) -> kopf.ConnectionInfo:
    """kopf's credentials from the same kubeconfig lightkube reads."""
    config = KubeConfig.from_file(path).get()
    if config is None:
        raise kopf.LoginError(f"{path} has no current context")
    cluster, user = config.cluster, config.user

    def file(value: Any) -> str | None:
        return str(config.abs_file(value)) if value else None

    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=file(cluster.certificate_auth),
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure or None,
        certificate_path=file(user.client_cert if user else None),
        certificate_data=user.client_cert_data if user else None,
        private_key_path=file(user.client_key if user else None),
        private_key_data=user.client_key_data if user else None,
        token=user.token if user else None,
        default_namespace=config.namespace,
    )


async def reconcile_and_report(
    kube: Kube, locks: dict[Any, asyncio.Lock], namespace: str, name: str, trigger: str = "change"
) -> None:
    """Reconcile the CoderPlatform as stored now; patch only changed status; post its Events.

    The lock keeps a change handler and the resync of the same object from overlapping.
    """
    async with locks[(namespace, name)]:
        started = time.perf_counter()
        try:
            retry = await _reconcile_and_report(kube, namespace, name)
        except Exception:
            metrics.RECONCILES.labels(trigger, "error").inc()
            metrics.ERRORS.inc()
            raise
        finally:
            metrics.DURATION.observe(time.perf_counter() - started)
        metrics.RECONCILES.labels(trigger, "retry" if retry else "ok").inc()
    if retry:
        raise kopf.TemporaryError(retry, delay=2)


async def _reconcile_and_report(kube: Kube, namespace: str, name: str) -> str | None:
    body = await kube.platform(namespace, name)
    if body is None:
        return None
    outcome = await reconcile(kube, body)
    for refused in outcome.refused:
        metrics.REFUSED.labels(refused.split("/", 1)[0]).inc()
    if outcome.status_patch:
        await kube.patch_status(namespace, name, outcome.status_patch)
    for event in outcome.events:
        try:
            await kube.post_event(body, event.type, event.reason, event.message)
        except Exception:  # an Event is a courtesy: losing one must not fail the reconcile
            log.warning("cannot post Event %s on %s/%s", event.reason, namespace, name, exc_info=True)
    return outcome.retry


async def remove_sandbox_if_gone(
    kube: Kube, locks: dict[Any, asyncio.Lock], namespace: str, name: str
) -> list[str]:
    """Remove a CoderPlatform's objects outside its namespace once it is gone (never while it exists:
    one deleted and created again under the same name keeps them)."""
    async with locks[(namespace, name)]:
        if await kube.platform(namespace, name) is not None:
            return []
        return await remove_sandbox(kube, namespace, name)


async def sweep(
    kube: Kube, locks: dict[Any, asyncio.Lock], options: Options, exclude: set[tuple[str, str]]
) -> None:
    """What CoderPlatforms deleted while the operator was away (or unseen) left outside their
    namespace; `exclude`: the ones just listed (each still checked before anything is deleted)."""
    for namespace, name in sorted(await kube.sandbox_owners() - exclude):
        if not options.namespaces or namespace in options.namespaces:
            await remove_sandbox_if_gone(kube, locks, namespace, name)


# The children's kinds, watched so that a child edited or deleted by hand wakes its owner's
# reconcile within a second (the periodic resync stays as the level-triggered safety net).
# ServiceMonitors are left to the resync: their kind may not be served at all.
CHILD_RESOURCES = (
    ("v1", "configmaps"),
    ("v1", "secrets"),
    ("v1", "services"),
    ("apps/v1", "statefulsets"),
    ("batch/v1", "jobs"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("apps/v1", "deployments"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "networkpolicies"),
    ("networking.k8s.io/v1", "ingresses"),
    ("v1", "resourcequotas"),  # in the sandbox namespace only
)
# How long a wake-up waits for more news about the same CoderPlatform: a burst of events (a
# rollout updates a Deployment's status many times) becomes one reconcile.
WAKE_DELAY = 0.3
# A reconcile woken by a child that failed (the API server briefly unavailable, say) is tried again.
RETRY_DELAY = 5.0


def owner_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the CoderPlatform controlling a child, by its owner reference or, in the
    sandbox namespace, by its labels (None for anything else)."""
    meta = body.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if (
            ref.get("kind") == names.KIND
            and ref.get("apiVersion") == names.API_VERSION
            and ref.get("controller")
        ):
            return str(meta.get("namespace")), str(ref["name"])
    labels = meta.get("labels") or {}
    if names.OWNER_NAMESPACE_LABEL in labels and names.INSTANCE_LABEL in labels:
        return labels[names.OWNER_NAMESPACE_LABEL], labels[names.INSTANCE_LABEL]
    return None


class Waker:
    """Reconciles a CoderPlatform soon after news of one of its children, coalescing bursts."""

    def __init__(self, kube: Kube, locks: dict[Any, asyncio.Lock]) -> None:
        self.kube, self.locks = kube, locks
        self.pending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # pending and running, for a clean stop
        self.closed = False

    def wake(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self.pending and not self.closed:
            task = asyncio.create_task(self._run(key))
            self.pending[key] = task
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(WAKE_DELAY)
        del self.pending[key]  # news from now on schedules another run
        try:
            await reconcile_and_report(self.kube, self.locks, *key, trigger="child")
        except kopf.TemporaryError as exc:
            log.info("reconcile of %s/%s: %s", *key, exc)
            await asyncio.sleep(exc.delay or 1)
            self.wake(*key)
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying in %ss", *key, RETRY_DELAY)
            await asyncio.sleep(RETRY_DELAY)
            self.wake(*key)

    async def close(self) -> None:
        self.closed = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def resync_forever(kube: Kube, locks: dict[Any, asyncio.Lock], options: Options) -> None:
    while True:
        await asyncio.sleep(options.resync_seconds)
        try:
            platforms = await kube.platforms(options.namespaces)
        except Exception:
            log.exception("resync: cannot list CoderPlatforms")
            continue
        for namespace, name in platforms:
            try:
                await reconcile_and_report(kube, locks, namespace, name, trigger="resync")
            except kopf.TemporaryError as exc:
                log.info("resync of %s/%s: %s", namespace, name, exc)
            except Exception:
                log.exception("resync of %s/%s failed; retried on the next pass", namespace, name)
        try:
            await sweep(kube, locks, options, exclude=set(platforms))
        except Exception:
            log.exception("resync: cannot sweep what deleted CoderPlatforms left; retried on the next pass")


def register(registry: kopf.OperatorRegistry, options: Options) -> None:
    @kopf.on.startup(registry=registry, id="startup")
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        kube = options.kube_factory() if options.kube_factory else Kube.from_kubeconfig(options.kubeconfig)
        locks: dict[Any, asyncio.Lock] = defaultdict(asyncio.Lock)
        memo.update(
            kube=kube,
            locks=locks,
            waker=Waker(kube, locks),
            resync=asyncio.create_task(resync_forever(kube, locks, options)),
        )

    @kopf.on.cleanup(registry=registry, id="cleanup")
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        memo["resync"].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo["resync"]
        await memo["waker"].close()
        await memo["kube"].close()

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if options.kubeconfig:
            return connection_info(options.kubeconfig)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(*RESOURCE, registry=registry, id="reconcile")
    @kopf.on.update(*RESOURCE, registry=registry, id="reconcile", field="spec")
    @kopf.on.resume(*RESOURCE, registry=registry, id="reconcile")
    async def changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
        assert namespace is not None  # the CRD is namespaced
        await reconcile_and_report(memo["kube"], memo["locks"], namespace, name)

    async def child_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        owner = owner_of(body)
        if owner is not None and "waker" in memo:
            memo["waker"].wake(*owner)

    # No finalizer (see the module's docstring): the deletion as the watch reports it, and the sweep.
    @kopf.on.event(*RESOURCE, registry=registry, id="deleted")
    async def deleted(
        event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
    ) -> None:
        if event["type"] == "DELETED" and namespace is not None and "kube" in memo:
            await remove_sandbox_if_gone(memo["kube"], memo["locks"], namespace, name)

    # Filtered by the label every child carries; kopf writes nothing on these (no finalizer, no
    # annotation): an event handler only reads.
    for api_version, plural in CHILD_RESOURCES:
        group, _, version = api_version.rpartition("/")
        kopf.on.event(
            group=group,
            version=version,
            plural=plural,
            registry=registry,
            id=f"child-{plural}",
            labels={names.MANAGED_BY_LABEL: names.MANAGED_BY},
        )(child_changed)
