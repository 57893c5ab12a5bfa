"""A typed, fully defaulted view of a CoderPlatform: what the builders read instead of raw dicts.

Per-target settings are merged here once (target field over `spec.defaults` field, env by name,
maps by key), so a builder never has to know where a value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from coder.operator import crd, names
from coder.runner import registry
from coder.shared.target import KubeRule

Mode = Literal["microservices", "monolithic"]


class InvalidSpec(ValueError):
    """A spec the schema admitted but that cannot work (reported as a condition, not retried)."""


@dataclass(frozen=True)
class Owner:
    """The CoderPlatform object itself: what every child's owner reference points at."""

    name: str
    namespace: str
    uid: str
    generation: int = 1

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class Autoscaling:
    enabled: bool
    min_replicas: int
    max_replicas: int
    target_cpu: int
    target_memory: int | None
    scale_down_stabilization: int


@dataclass(frozen=True)
class TargetConfig:
    """One target (or, in monolithic mode, the one `all` process) with its settings merged."""

    name: str
    port: int
    needs: frozenset[str]
    enabled: bool
    replicas: int
    resources: dict[str, dict[str, Any]]
    autoscaling: Autoscaling
    env: tuple[dict[str, Any], ...]
    pod_template: dict[str, Any]
    # Settings whose values the operator generates (the descriptor's `generated_secrets`).
    generated_secrets: tuple[str, ...] = ()
    # The Kubernetes API access it needs, and the settings it runs with in a cluster (the
    # descriptor's `kube_rules` and `cluster_settings`).
    kube_rules: tuple[KubeRule, ...] = ()
    cluster_settings: Mapping[str, str] = field(default_factory=dict)
    # Server processes in each pod (`run --workers`).
    workers: int = 1

    @property
    def min_replicas(self) -> int:
        """The fewest pods it runs with: the PDB is only worth having above one."""
        return self.autoscaling.min_replicas if self.autoscaling.enabled else self.replicas


@dataclass(frozen=True)
class DataStore:
    name: str
    managed: Mapping[str, Any] | None
    external: SecretRef | None

    @property
    def port(self) -> int:
        port: int = crd.DATA_STORE_DEFAULTS[self.name]["port"]
        return port


@dataclass(frozen=True)
class Ingress:
    enabled: bool
    host: str | None
    class_name: str | None
    tls_secret: str | None
    annotations: dict[str, str]
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Oidc:
    issuer: str
    client_id: str
    client_secret: SecretRef
    allowed_domains: tuple[str, ...]


@dataclass(frozen=True)
class Auth:
    local_accounts: bool
    open_signup: bool
    oidc: Oidc | None


@dataclass(frozen=True)
class Observability:
    otlp_endpoint: str | None
    otlp_protocol: str
    sampling_ratio: float
    propagators: str
    service_monitor: bool
    scrape_interval: str
    service_monitor_labels: dict[str, str]


@dataclass(frozen=True)
class Sandbox:
    """The namespace the targets' own workloads run in (execution's Jobs), and its quota."""

    namespace: str
    quota: dict[str, Any] = field(default_factory=dict)


# Namespace names are DNS labels.
NAMESPACE_MAX = 63


def _sandbox(block: Mapping[str, Any], owner: Owner) -> Sandbox:
    namespace = block.get("namespace") or f"{owner.namespace}-sandbox"
    if namespace == owner.namespace:
        raise InvalidSpec(
            "sandbox.namespace: must differ from the CoderPlatform's namespace (the point of a sandbox "
            "is that its pods cannot mount the platform's Secrets)"
        )
    if len(namespace) > NAMESPACE_MAX:
        raise InvalidSpec(
            f"sandbox.namespace: the default {namespace!r} is longer than {NAMESPACE_MAX} characters; "
            "set spec.sandbox.namespace"
        )
    return Sandbox(namespace=namespace, quota=dict(block.get("quota") or {}))


@dataclass(frozen=True)
class PlatformSpec:
    owner: Owner
    version: str
    repository: str
    pull_policy: str
    pull_secrets: tuple[str, ...]
    mode: Mode
    environment: str
    paused: bool
    targets: dict[str, TargetConfig]  # every registered target, registry order, enabled or not
    monolith: TargetConfig
    ingress: Ingress
    data_stores: dict[str, DataStore]
    auth: Auth
    observability: Observability
    network_policy: bool
    sandbox: Sandbox
    extra_ingress_from: tuple[dict[str, Any], ...] = field(default=())

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.version}"

    @property
    def enabled_targets(self) -> dict[str, TargetConfig]:
        return {name: t for name, t in self.targets.items() if t.enabled}

    @property
    def workloads(self) -> dict[str, TargetConfig]:
        """What gets a Deployment: each enabled target, or the one monolith."""
        if self.mode == "monolithic":
            return {names.MONOLITH: self.monolith} if self.enabled_targets else {}
        return self.enabled_targets

    @property
    def needs(self) -> frozenset[str]:
        """The data stores some enabled target uses; only those are deployed or required."""
        return frozenset().union(*(t.needs for t in self.enabled_targets.values()))


@cache
def _schema() -> crd.Schema:
    return crd.spec_schema()


def _merge_maps(base: Mapping[str, Any] | None, override: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(base or {}), **(override or {})}


def _merge_env(base: list[dict[str, Any]], override: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    merged = {item["name"]: item for item in base}
    merged.update({item["name"]: item for item in override})
    return tuple(merged.values())


def _autoscaling(base: Mapping[str, Any], override: Mapping[str, Any], target: str) -> Autoscaling:
    values = {**base, **override}
    result = Autoscaling(
        enabled=bool(values["enabled"]),
        min_replicas=int(values["minReplicas"]),
        max_replicas=int(values["maxReplicas"]),
        target_cpu=int(values["targetCPUUtilizationPercentage"]),
        target_memory=values.get("targetMemoryUtilizationPercentage"),
        scale_down_stabilization=int(values["scaleDownStabilizationSeconds"]),
    )
    # The schema checks the merged values too (crd.merged_rules); this covers specs an older CRD admitted.
    if result.enabled and result.min_replicas > result.max_replicas:
        raise InvalidSpec(
            f"targets.{target}.autoscaling: minReplicas {result.min_replicas} exceeds "
            f"maxReplicas {result.max_replicas} (after merging spec.defaults)"
        )
    return result


def _target(
    name: str,
    port: int,
    needs: frozenset[str],
    defaults: Mapping[str, Any],
    own: Mapping[str, Any],
    generated_secrets: tuple[str, ...] = (),
    kube_rules: tuple[KubeRule, ...] = (),
    cluster_settings: Mapping[str, str] | None = None,
) -> TargetConfig:
    resources = {
        kind: _merge_maps(defaults["resources"].get(kind), own.get("resources", {}).get(kind))
        for kind in ("requests", "limits")
    }
    pod_template = {
        key: (
            _merge_maps(defaults.get("podTemplate", {}).get(key), own.get("podTemplate", {}).get(key))
            if key in ("labels", "annotations", "nodeSelector")
            else own.get("podTemplate", {}).get(key, defaults.get("podTemplate", {}).get(key))
        )
        for key in ("labels", "annotations", "nodeSelector", "tolerations", "affinity", "priorityClassName")
    }
    return TargetConfig(
        name=name,
        port=port,
        needs=needs,
        enabled=bool(own.get("enabled", defaults["enabled"])),
        replicas=int(own.get("replicas", defaults["replicas"])),
        resources={kind: values for kind, values in resources.items() if values},
        autoscaling=_autoscaling(defaults["autoscaling"], own.get("autoscaling", {}), name),
        env=_merge_env(defaults.get("env", []), own.get("env", [])),
        pod_template={key: value for key, value in pod_template.items() if value},
        generated_secrets=generated_secrets,
        kube_rules=kube_rules,
        cluster_settings=dict(cluster_settings or {}),
        workers=int(own.get("workers", defaults.get("workers", 1))),
    )


def _secret_ref(ref: Mapping[str, Any]) -> SecretRef:
    return SecretRef(name=ref["name"], key=ref["key"])


def _data_store(name: str, spec: Mapping[str, Any]) -> DataStore:
    block = spec[name]
    external = block.get("external")
    return DataStore(
        name=name,
        managed=block.get("managed"),
        external=_secret_ref(external["urlSecretRef"]) if external else None,
    )


def parse(raw_spec: Mapping[str, Any], owner: Owner) -> PlatformSpec:
    """The spec of a CoderPlatform, defaulted like the API server does, merged and typed."""
    spec = crd.apply_defaults(_schema(), dict(raw_spec))
    defaults = spec["defaults"]
    targets = {
        name: _target(
            name,
            t.port,
            frozenset(t.needs),
            defaults,
            spec["targets"].get(name, {}),
            tuple(t.generated_secrets),
            t.kube_rules,
            t.cluster_settings,
        )
        for name, t in registry.descriptors().items()
    }
    enabled = [t for t in targets.values() if t.enabled]
    monolith = _target(
        names.MONOLITH,
        # The monolith serves on the gateway's port, as `coder-platform run --target all` does.
        targets["gateway"].port if "gateway" in targets else 3000,
        frozenset().union(*(t.needs for t in enabled)),
        defaults,
        {},
    )
    ingress = spec["ingress"]
    auth = spec["auth"]
    oidc = auth.get("oidc")
    obs = spec["observability"]
    monitor = obs["serviceMonitor"]
    return PlatformSpec(
        owner=owner,
        version=spec["version"],
        repository=spec["image"]["repository"],
        pull_policy=spec["image"]["pullPolicy"],
        pull_secrets=tuple(spec["image"].get("pullSecrets", ())),
        mode=spec["mode"],
        environment=spec["environment"],
        paused=bool(spec["paused"]),
        targets=targets,
        monolith=monolith,
        ingress=Ingress(
            enabled=bool(ingress["enabled"]),
            host=ingress.get("host"),
            class_name=ingress.get("className"),
            tls_secret=ingress.get("tlsSecretName"),
            annotations=dict(ingress.get("annotations", {})),
            trusted_proxies=tuple(ingress.get("trustedProxies", ())),
        ),
        data_stores={name: _data_store(name, spec) for name in names.DATA_STORES},
        auth=Auth(
            local_accounts=bool(auth["localAccounts"]),
            open_signup=bool(auth["openSignup"]),
            oidc=Oidc(
                issuer=oidc["issuer"],
                client_id=oidc["clientId"],
                client_secret=_secret_ref(oidc["clientSecretRef"]),
                allowed_domains=tuple(oidc.get("allowedDomains", ())),
            )
            if oidc
            else None,
        ),
        observability=Observability(
            otlp_endpoint=obs.get("otlpEndpoint"),
            otlp_protocol=obs["otlpProtocol"],
            sampling_ratio=float(obs["samplingRatio"]),
            propagators=obs["propagators"],
            service_monitor=bool(monitor["enabled"]),
            scrape_interval=monitor["interval"],
            service_monitor_labels=dict(monitor.get("labels", {})),
        ),
        network_policy=bool(spec["networkPolicy"]["enabled"]),
        sandbox=_sandbox(spec["sandbox"], owner),
        extra_ingress_from=tuple(spec["networkPolicy"].get("additionalIngressFrom", ())),
    )
