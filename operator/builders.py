"""Pure functions from a CoderPlatform spec (plus the few observed facts it depends on) to manifests.

Nothing here talks to the API server: `desired()` returns every child as a plain dict, which the
reconciler compares with what exists and applies, and which unit tests inspect directly.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coder.operator import crd, names
from coder.operator.spec import DataStore, PlatformSpec, TargetConfig
from coder.shared.settings import METRICS_PORT
from coder.shared.target import service_urls, workload_secret

Manifest = dict[str, Any]
# Returns n random bytes; the reconciler passes `secrets.token_bytes`, tests a deterministic one.
RandomBytes = Callable[[int], bytes]

CONTAINER = "app"
UID = 10001  # the platform image's unprivileged user
DATA_STORE_UID = 999  # the postgres, redis and rabbitmq images' own users
TARGET_ROLE_LABEL = f"{names.GROUP}/role"
# The gateway's default GATEWAY_MAX_BODY_BYTES (coder.gateway.config, which the operator does not
# import; a test compares them), and how long a stream may stay silent behind the Ingress.
GATEWAY_MAX_BODY_BYTES = 10 * 2**20
STREAM_TIMEOUT_SECONDS = 3600

# How each setting a descriptor lists in `generated_secrets` is made: from fresh random bytes
# (`key32()`) or from the settings made before it (`made`). A target with any keeps them in a
# Secret `<target>-keys`, mounted with envFrom so that every setting under the target's prefix can
# be added to the Secret later without a code change.
GENERATED: dict[str, Callable[[Callable[[], str], Mapping[str, str]], str]] = {
    "GATEWAY_KEY_ENCRYPTION_KEY": lambda key32, made: key32(),
    "SECRETS_MASTER_KEYS": lambda key32, made: json.dumps({"k1": key32()}),
    "SECRETS_ACTIVE_KEY_ID": lambda key32, made: next(iter(json.loads(made["SECRETS_MASTER_KEYS"]))),
}


def _generate(target: str, setting: str, key32: Callable[[], str], made: Mapping[str, str]) -> str:
    """A generated setting's first value: a target's workload secret (`<TARGET>_WORKLOAD_SECRET`, which
    every target calling another for a user has) is random bytes; the others have a GENERATED recipe."""
    if setting == workload_secret(target):
        return key32()
    return GENERATED[setting](key32, made)


@dataclass(frozen=True)
class StoreKind:
    """How the operator runs a managed data store: a new data store is one more row of STORE_KINDS.

    `env`: (variable, value, key) - a literal value, or (key not None) that key of the store's Secret.
    `extra_secrets`: random values kept in the Secret beside `password`; `url` is formatted with
    password, host and port. `mounts` (volume, path): "data" is the claim, the others in
    `scratch_volumes` are emptyDirs.
    """

    url: str
    env: tuple[tuple[str, str | None, str | None], ...]
    mounts: tuple[tuple[str, str], ...]
    scratch_volumes: tuple[str, ...]
    probe: Callable[[int], dict[str, Any]]
    args: tuple[str, ...] = ()
    extra_secrets: tuple[str, ...] = ()
    migrations: bool = False  # the migration Job connects to it


STORE_KINDS: dict[str, StoreKind] = {
    "postgres": StoreKind(
        url="postgresql://coder:{password}@{host}:{port}/coder",
        env=(
            ("POSTGRES_USER", "coder", None),
            ("POSTGRES_DB", "coder", None),
            ("POSTGRES_PASSWORD", None, "password"),
            ("PGDATA", "/data/pgdata", None),
        ),
        mounts=(("data", "/data"), ("tmp", "/tmp"), ("run", "/var/run/postgresql")),  # noqa: S108
        scratch_volumes=("tmp", "run"),
        probe=lambda port: {
            "exec": {"command": ["pg_isready", "-U", "coder", "-d", "coder", "-h", "127.0.0.1"]}
        },
        migrations=True,
    ),
    "redis": StoreKind(
        url="redis://:{password}@{host}:{port}/0",
        env=(("REDIS_PASSWORD", None, "password"),),
        mounts=(("data", "/data"), ("tmp", "/tmp")),  # noqa: S108
        scratch_volumes=("tmp",),
        probe=lambda port: {"tcpSocket": {"port": port}},
        args=("redis-server", "--requirepass", "$(REDIS_PASSWORD)", "--appendonly", "yes", "--dir", "/data"),
    ),
    "rabbitmq": StoreKind(
        url="amqp://coder:{password}@{host}:{port}/",
        env=(
            ("RABBITMQ_DEFAULT_USER", "coder", None),
            ("RABBITMQ_DEFAULT_PASS", None, "password"),
            ("RABBITMQ_ERLANG_COOKIE", None, "erlang-cookie"),
            ("RABBITMQ_MNESIA_BASE", "/data/mnesia", None),
        ),
        mounts=(("data", "/var/lib/rabbitmq"), ("tmp", "/tmp"), ("etc", "/etc/rabbitmq/conf.d")),  # noqa: S108
        scratch_volumes=("tmp", "etc"),
        probe=lambda port: {"exec": {"command": ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]}},
        extra_secrets=("erlang-cookie",),
    ),
}


def key_secret(target: str) -> str:
    """The name (before `child`) of the Secret holding a target's generated settings."""
    return f"{target}-keys"


@dataclass(frozen=True)
class Observed:
    """What the desired state depends on beyond the spec, read by the reconciler."""

    # Data of existing generated Secrets (decoded): their random values are created once and kept.
    generated: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Data (as stored, base64) of user Secrets the pods reference; a missing Secret is absent.
    referenced: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The image each existing Deployment runs, by workload name.
    deployed_images: Mapping[str, str] = field(default_factory=dict)
    migration_succeeded: bool = False
    postgres_ready: bool = False
    # Whether the Prometheus Operator's ServiceMonitor kind is served.
    service_monitors: bool = False


# --------------------------------------------------------------------------- small helpers


def digest(value: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(spec: PlatformSpec, name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.owner.namespace,
        "labels": {
            **names.instance_labels(spec.owner.name),
            names.COMPONENT_LABEL: component,
            names.PART_OF_LABEL: names.APP_NAME,
        },
        "ownerReferences": [spec.owner.reference()],
        **extra,
    }


def child(spec: PlatformSpec, component: str) -> str:
    return names.child_name(spec.owner.name, component)


def service_name(spec: PlatformSpec, workload: str) -> str:
    # The monolith answers on the gateway's Service, so the Ingress and the URL stay the same.
    return child(spec, "gateway" if workload == names.MONOLITH else workload)


def pod_security_context(uid: int) -> dict[str, Any]:
    """The restricted Pod Security Standard, pod level."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


# --------------------------------------------------------------------------- data stores and secrets


def url_secret(spec: PlatformSpec, store: DataStore) -> tuple[str, str]:
    """The Secret name and key the targets read a data store's URL from."""
    if store.external is not None:
        return store.external.name, store.external.key
    return child(spec, store.name), "url"


def generated_secrets(
    spec: PlatformSpec, existing: Mapping[str, Mapping[str, str]], rand: RandomBytes
) -> list[Manifest]:
    """Passwords and keys: a random value is created once and then always read back from the cluster.

    Values derived from them (the URLs) are rendered again each time, so they follow a rename.
    """

    def kept(secret: str, key: str, make: Callable[[], str]) -> str:
        return existing.get(secret, {}).get(key) or make()

    def password() -> str:
        return base64.urlsafe_b64encode(rand(24)).decode().rstrip("=")

    def key32() -> str:
        return base64.b64encode(rand(32)).decode()

    ns = spec.owner.namespace
    out: list[Manifest] = []
    for store in spec.data_stores.values():
        if store.managed is None or store.name not in spec.needs:
            continue
        name = child(spec, store.name)
        host = f"{name}.{ns}.svc"
        kind = STORE_KINDS[store.name]
        pw = kept(name, "password", password)
        data = {"password": pw}
        for key in kind.extra_secrets:
            data[key] = kept(name, key, password)
        data["url"] = kind.url.format(password=pw, host=host, port=store.port)
        out.append(_secret(spec, name, store.name, data))
    for target in spec.targets.values():  # every registered target, enabled or not: keys outlive a pause
        if not target.generated_secrets:
            continue
        name = child(spec, key_secret(target.name))
        made: dict[str, str] = {}
        for setting in target.generated_secrets:
            made[setting] = existing.get(name, {}).get(setting) or _generate(
                target.name, setting, key32, made
            )
        out.append(_secret(spec, name, target.name, made))
    return out


def _secret(spec: PlatformSpec, name: str, component: str, data: Mapping[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(spec, name, component),
        "type": "Opaque",
        # `data`, not `stringData`: the API server stores only `data`, so the comparison sees it.
        "data": {key: b64(value) for key, value in sorted(data.items())},
    }


def referenced_secrets(spec: PlatformSpec) -> set[str]:
    """User Secrets the pods read (external data stores, OIDC, env); the reconciler fetches these."""
    refs = {
        store.external.name
        for store in spec.data_stores.values()
        if store.external is not None and store.name in spec.needs
    }
    if spec.auth.oidc is not None:
        refs.add(spec.auth.oidc.client_secret.name)
    for target in [*spec.targets.values(), spec.monolith]:
        for item in target.env:
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add(ref["name"])
    return refs


def config_map(spec: PlatformSpec) -> Manifest:
    """Settings every process shares. Target-specific settings are inline in that target's pods."""
    ports = {name: t.port for name, t in spec.enabled_targets.items()}
    urls = {} if spec.mode == "monolithic" else _service_urls(spec, ports)  # monolithic: all in-process
    metrics = {} if spec.mode == "monolithic" else _service_urls(spec, dict.fromkeys(ports, METRICS_PORT))
    gateway = _service_urls(spec, {"gateway": spec.monolith.port})["gateway"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(spec, child(spec, "config"), "config"),
        "data": {
            "CODER_ENVIRONMENT": spec.environment,
            "CODER_SERVICE_URLS": json.dumps(urls, sort_keys=True),
            # Each target's /metrics (observability reads them): its Service's `metrics` port.
            "CODER_METRICS_URLS": json.dumps(metrics, sort_keys=True),
            "CODER_JWKS_URL": f"{gateway}/.well-known/jwks.json",
        },
    }


def data_store_workload(spec: PlatformSpec, store: DataStore) -> list[Manifest]:
    """A managed data store: a StatefulSet with one volume claim, and its headless Service."""
    assert store.managed is not None
    name = child(spec, store.name)
    labels = names.selector_labels(spec.owner.name, store.name)
    port = store.port
    kind = STORE_KINDS[store.name]
    env = [
        secret_env(var, name, key) if key is not None else {"name": var, "value": value}
        for var, value, key in kind.env
    ]
    args = list(kind.args)
    mounts = [{"name": volume, "mountPath": path} for volume, path in kind.mounts]
    volumes: list[dict[str, Any]] = [{"name": volume, "emptyDir": {}} for volume in kind.scratch_volumes]
    probe = kind.probe(port)
    container: dict[str, Any] = {
        "name": store.name,
        "image": store.managed["image"],
        "ports": [{"name": store.name, "containerPort": port}],
        "env": env,
        "readinessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {**probe, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6},
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if args:
        container["args"] = args
    container["resources"] = copy.deepcopy(
        store.managed.get("resources") or crd.DATA_STORE_DEFAULTS[store.name]["resources"]
    )
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": store.managed["storage"]}},
        },
    }
    if store.managed.get("storageClassName"):
        claim["spec"]["storageClassName"] = store.managed["storageClassName"]
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(spec, name, store.name),
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            # Retain by default: deleting the CoderPlatform keeps the data (spec.<store>.managed).
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
                **(store.managed.get("pvcRetentionPolicy") or {}),
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(DATA_STORE_UID),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, name, store.name),
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [{"name": store.name, "port": port, "targetPort": store.name}],
        },
    }
    return [statefulset, service]


# --------------------------------------------------------------------------- targets


def _target_names(spec: PlatformSpec, workload: TargetConfig) -> list[str]:
    if workload.name == names.MONOLITH:
        return list(spec.enabled_targets)
    return [workload.name]


def target_env(spec: PlatformSpec, workload: TargetConfig, version: str) -> list[dict[str, Any]]:
    """Operator-provided env, then the user's; an operator variable the user also set is left out.

    `version` is the one the pods run, which lags `spec.version` while a migration is pending.
    """
    served = _target_names(spec, workload)
    deployment = child(spec, workload.name)
    ours: list[dict[str, Any]] = [
        # Downward API first: later values expand them with $(NAME).
        field_env("K8S_POD_NAME", "metadata.name"),
        field_env("K8S_POD_UID", "metadata.uid"),
        field_env("K8S_NAMESPACE_NAME", "metadata.namespace"),
        field_env("K8S_NODE_NAME", "spec.nodeName"),
    ]
    for store in spec.data_stores.values():
        if store.name in workload.needs:
            secret, key = url_secret(spec, store)
            ours.append(secret_env(crd.DATA_STORE_URL_ENV[store.name], secret, key))
    if "gateway" in served:
        ours.extend(_gateway_env(spec))
        ours.extend(_workload_secrets_env(spec, served))
    obs = spec.observability
    service = "coder-platform" if workload.name == names.MONOLITH else f"coder-{workload.name}"
    attributes = ",".join(
        [
            "k8s.pod.name=$(K8S_POD_NAME)",
            "k8s.pod.uid=$(K8S_POD_UID)",
            "k8s.namespace.name=$(K8S_NAMESPACE_NAME)",
            "k8s.node.name=$(K8S_NODE_NAME)",
            f"k8s.deployment.name={deployment}",
            f"k8s.container.name={CONTAINER}",
            f"service.namespace={spec.owner.namespace}",
            f"service.version={version}",
            "service.instance.id=$(K8S_POD_UID)",
            f"deployment.environment.name={spec.environment}",
        ]
    )
    ours += [
        {"name": "OTEL_SERVICE_NAME", "value": service},
        {"name": "OTEL_RESOURCE_ATTRIBUTES", "value": attributes},
        {"name": "OTEL_PROPAGATORS", "value": obs.propagators},
        {"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"},
        {"name": "OTEL_TRACES_SAMPLER_ARG", "value": f"{obs.sampling_ratio:g}"},
    ]
    if obs.otlp_endpoint:
        ours += [
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": obs.otlp_endpoint},
            {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": obs.otlp_protocol},
        ]
    for target in served:
        for setting, value in spec.targets[target].cluster_settings.items():
            value = value.replace("{sandbox_namespace}", spec.sandbox.namespace)
            ours.append({"name": setting, "value": value.replace("{namespace}", spec.owner.namespace)})
    user = [dict(item) for item in workload.env]
    taken = {item["name"] for item in user}
    return [item for item in ours if item["name"] not in taken] + user


def _gateway_env(spec: PlatformSpec) -> list[dict[str, Any]]:
    auth = spec.auth
    env = [
        {"name": "GATEWAY_LOCAL_ACCOUNTS", "value": json.dumps(auth.local_accounts)},
        {"name": "GATEWAY_OPEN_SIGNUP", "value": json.dumps(auth.open_signup)},
    ]
    if auth.oidc is not None:
        env += [
            {"name": "GATEWAY_OIDC_ISSUER", "value": auth.oidc.issuer},
            {"name": "GATEWAY_OIDC_CLIENT_ID", "value": auth.oidc.client_id},
            secret_env(
                "GATEWAY_OIDC_CLIENT_SECRET", auth.oidc.client_secret.name, auth.oidc.client_secret.key
            ),
            {"name": "GATEWAY_OIDC_ALLOWED_DOMAINS", "value": json.dumps(list(auth.oidc.allowed_domains))},
        ]
        if spec.ingress.enabled and spec.ingress.host:
            env.append(
                {"name": "GATEWAY_OIDC_REDIRECT_URI", "value": f"{gateway_url(spec)}/auth/oidc/callback"}
            )
    if spec.ingress.trusted_proxies:
        env.append({"name": "CODER_TRUSTED_PROXIES", "value": ",".join(spec.ingress.trusted_proxies)})
    return env


def _workload_secrets_env(spec: PlatformSpec, served: Iterable[str]) -> list[dict[str, Any]]:
    """The gateway checks each calling target's workload secret: it reads that one key of the target's
    Secret (never the rest of it), unless it serves the target and reads the whole Secret anyway."""
    env = []
    for target in spec.targets.values():
        setting = workload_secret(target.name)
        if setting in target.generated_secrets and target.name not in served:
            env.append(secret_env(setting, child(spec, key_secret(target.name)), setting))
    return env


def kube_rules(spec: PlatformSpec, workload: TargetConfig) -> list[dict[str, list[str]]]:
    """The RBAC rules of the targets a workload serves (their descriptors' `kube_rules`), each once."""
    rules: list[dict[str, list[str]]] = []
    for target in _target_names(spec, workload):
        for rule in spec.targets[target].kube_rules:
            if rule.manifest() not in rules:
                rules.append(rule.manifest())
    return rules


def api_access(spec: PlatformSpec, workload: TargetConfig) -> list[Manifest]:
    """A ServiceAccount of its own for a workload that calls the Kubernetes API (its Role is in the
    sandbox namespace, `sandbox()`); nothing for the others, whose pods get no token."""
    if not kube_rules(spec, workload):
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(spec, child(spec, workload.name), workload.name),
        }
    ]


# Pod Security Admission: the sandbox's pods must meet the restricted standard (refused otherwise).
POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def sandbox_metadata(spec: PlatformSpec, name: str, component: str) -> dict[str, Any]:
    """Outside the CoderPlatform's namespace no owner reference reaches: the labels say whose it is."""
    return {
        "name": name,
        "namespace": spec.sandbox.namespace,
        "labels": {
            **names.sandbox_labels(spec.owner.namespace, spec.owner.name),
            names.COMPONENT_LABEL: component,
            names.PART_OF_LABEL: names.APP_NAME,
        },
    }


def sandbox(spec: PlatformSpec) -> list[Manifest]:
    """The namespace the targets calling the Kubernetes API start their workloads in (execution: a Job
    per run), apart from the platform's: whoever may create pods in a namespace can mount its Secrets.
    In it: a Role of exactly each such workload's rules bound to its ServiceAccount (in the platform's
    namespace), a deny-all NetworkPolicy for every pod there, and the quota if the spec sets one. The
    Namespace comes first; the reconciler creates it only if missing and never takes over one it did
    not make. Nothing when no enabled workload calls the API."""
    accounts = {name: rules for name, w in spec.workloads.items() if (rules := kube_rules(spec, w))}
    if not accounts:
        return []
    rbac = "rbac.authorization.k8s.io"
    namespace = sandbox_metadata(spec, spec.sandbox.namespace, "sandbox")
    del namespace["namespace"]
    namespace["labels"].update(POD_SECURITY)
    out: list[Manifest] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": namespace},
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": sandbox_metadata(spec, child(spec, "deny-all"), "sandbox"),
            # Every pod, both directions, no rule: nothing in or out unless a policy of a run allows it.
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    ]
    if spec.sandbox.quota:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": sandbox_metadata(spec, child(spec, "sandbox"), "sandbox"),
                "spec": {"hard": dict(spec.sandbox.quota)},
            }
        )
    for workload, rules in accounts.items():
        name = child(spec, workload)
        out += [
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "Role",
                "metadata": sandbox_metadata(spec, name, workload),
                "rules": rules,
            },
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "RoleBinding",
                "metadata": sandbox_metadata(spec, name, workload),
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.owner.namespace}],
            },
        ]
    return out


def env_from(spec: PlatformSpec, workload: TargetConfig) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = [{"configMapRef": {"name": child(spec, "config")}}]
    for target in _target_names(spec, workload):
        if spec.targets[target].generated_secrets:
            refs.append({"secretRef": {"name": child(spec, key_secret(target))}})
    return refs


def secrets_used(pod_spec: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a pod reads through env or envFrom."""
    used: set[str] = set()
    for container in pod_spec.get("containers", []):
        for item in container.get("env", []):
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                used.add(ref["name"])
        for item in container.get("envFrom", []):
            if "secretRef" in item:
                used.add(item["secretRef"]["name"])
    return used


def config_hash(
    pod_spec: Mapping[str, Any], config: Manifest, secrets: Mapping[str, Mapping[str, str]]
) -> str:
    """The hash of exactly the ConfigMap and Secret data this pod reads (a missing Secret counts too)."""
    used = sorted(secrets_used(pod_spec))
    return digest({"config": config["data"], "secrets": {name: secrets.get(name) for name in used}})


def deployment(
    spec: PlatformSpec,
    workload: TargetConfig,
    image: str,
    config: Manifest,
    secrets: Mapping[str, Mapping[str, str]],
    *,
    with_replicas: bool,
) -> Manifest:
    name = child(spec, workload.name)
    selector = names.selector_labels(spec.owner.name, workload.name)
    version = image.rsplit(":", 1)[-1]
    served = _target_names(spec, workload)
    selection = (
        "all" if workload.name == names.MONOLITH and served == list(spec.targets) else ",".join(served)
    )
    http = {"path": "/healthz", "port": "http"}
    template = workload.pod_template
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": spec.pull_policy,
        "command": ["coder-platform"],
        "args": [
            *("run", "--target", selection, "--host", "0.0.0.0", "--port", str(workload.port)),  # noqa: S104
            *(("--workers", str(workload.workers)) if workload.workers > 1 else ()),
        ],
        # /metrics on a port of its own (CODER_METRICS_PORT's default), for the cluster only.
        "ports": [
            {"name": "http", "containerPort": workload.port},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "envFrom": env_from(spec, workload),
        "env": target_env(spec, workload, version),
        "startupProbe": {"httpGet": http, "periodSeconds": 2, "failureThreshold": 60},
        "livenessProbe": {"httpGet": http, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a private emptyDir
    }
    if workload.resources:
        container["resources"] = workload.resources
    # Only a workload whose targets call the Kubernetes API gets a token: its own ServiceAccount's.
    access = {"serviceAccountName": name, "automountServiceAccountToken": True}
    pod_spec: dict[str, Any] = {
        **(access if kube_rules(spec, workload) else {"automountServiceAccountToken": False}),
        "enableServiceLinks": False,
        "securityContext": pod_security_context(UID),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
    }
    if spec.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in spec.pull_secrets]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if key in template:
            pod_spec[key] = template[key]
    manifest_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 5,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": {**template.get("labels", {}), **selector, names.VERSION_LABEL: version},
                "annotations": {
                    **template.get("annotations", {}),
                    names.CONFIG_HASH_ANNOTATION: config_hash(pod_spec, config, secrets),
                },
            },
            "spec": pod_spec,
        },
    }
    if with_replicas:
        manifest_spec = {"replicas": workload.replicas, **manifest_spec}
    meta = metadata(spec, name, workload.name)
    meta["labels"][names.VERSION_LABEL] = version
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": manifest_spec}


def target_service(spec: PlatformSpec, workload: TargetConfig) -> Manifest:
    meta = metadata(spec, service_name(spec, workload.name), workload.name)
    meta["labels"][TARGET_ROLE_LABEL] = "target"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(spec.owner.name, workload.name),
            "ports": [
                {"name": "http", "port": workload.port, "targetPort": "http"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def autoscaler(spec: PlatformSpec, workload: TargetConfig) -> Manifest:
    scaling = workload.autoscaling
    metrics = [_utilization("cpu", scaling.target_cpu)]
    if scaling.target_memory:
        metrics.append(_utilization("memory", scaling.target_memory))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, child(spec, workload.name), workload.name),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": child(spec, workload.name),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            # Up fast (double, or 4 pods, per minute), down slowly after a calm window: no flapping.
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Percent", "value": 100, "periodSeconds": 60},
                        {"type": "Pods", "value": 4, "periodSeconds": 60},
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
    }


def disruption_budget(spec: PlatformSpec, workload: TargetConfig) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, child(spec, workload.name), workload.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector_labels(spec.owner.name, workload.name)},
        },
    }


def network_policy(
    spec: PlatformSpec, component: str, ports: Iterable[int], sources: Iterable[str] | None, *, extra: bool
) -> Manifest:
    """Ingress to `component` on `ports` from this platform's pods of `sources` (None: from anywhere)."""
    rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port} for port in ports]}
    if sources is not None:
        peers: list[dict[str, Any]] = [
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": names.INSTANCE_LABEL, "operator": "In", "values": [spec.owner.name]},
                        {"key": names.COMPONENT_LABEL, "operator": "In", "values": sorted(sources)},
                    ]
                }
            }
        ]
        if extra:
            peers += [dict(peer) for peer in spec.extra_ingress_from]
        rule["from"] = peers
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, child(spec, component), component),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(spec.owner.name, component)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def network_policies(spec: PlatformSpec) -> list[Manifest]:
    workloads = spec.workloads
    out = []
    for name, workload in workloads.items():
        public = name in ("gateway", names.MONOLITH)
        # Targets call each other (and the gateway) over HTTP; the gateway is the public entry point.
        # Observability reads every target's /metrics, as the Prometheus of `additionalIngressFrom` may.
        ports = (workload.port, METRICS_PORT)
        out.append(network_policy(spec, name, ports, None if public else workloads, extra=True))
    for store in spec.data_stores.values():
        if store.managed is not None and store.name in spec.needs:
            users = [name for name, w in workloads.items() if store.name in w.needs]
            if STORE_KINDS[store.name].migrations:
                users.append(names.MIGRATION)
            out.append(network_policy(spec, store.name, (store.port,), users, extra=False))
    return out


def _service_urls(spec: PlatformSpec, ports: Mapping[str, int]) -> dict[str, str]:
    """Where each target answers inside the cluster: its Service in the platform's namespace."""
    return service_urls(ports, host=lambda name: f"{service_name(spec, name)}.{spec.owner.namespace}.svc")


def gateway_url(spec: PlatformSpec) -> str:
    if spec.ingress.enabled and spec.ingress.host:
        scheme = "https" if spec.ingress.tls_secret else "http"
        return f"{scheme}://{spec.ingress.host}"
    return _service_urls(spec, {"gateway": spec.monolith.port})["gateway"]


def ingress(spec: PlatformSpec) -> Manifest:
    ing = spec.ingress
    body: dict[str, Any] = {
        "rules": [
            {
                "host": ing.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": service_name(spec, "gateway"), "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if ing.class_name:
        body = {"ingressClassName": ing.class_name, **body}
    if ing.tls_secret:
        body["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    meta = metadata(spec, child(spec, "gateway"), "gateway")
    meta["annotations"] = {**nginx_annotations(spec), **ing.annotations}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": body}


def nginx_annotations(spec: PlatformSpec) -> dict[str, str]:
    """ingress-nginx settings for what the gateway serves (other controllers ignore them): streams
    (SSE, WebSocket) silent for up to an hour and passed through unbuffered both ways, and request
    bodies up to the gateway's own limit (GATEWAY_MAX_BODY_BYTES, when the spec sets it)."""
    gateway = spec.monolith if spec.mode == "monolithic" else spec.targets["gateway"]
    given = next((str(e.get("value")) for e in gateway.env if e["name"] == "GATEWAY_MAX_BODY_BYTES"), "")
    limit = int(given) if given.isdigit() else GATEWAY_MAX_BODY_BYTES
    prefix = "nginx.ingress.kubernetes.io/"
    return {
        prefix + "proxy-read-timeout": str(STREAM_TIMEOUT_SECONDS),
        prefix + "proxy-send-timeout": str(STREAM_TIMEOUT_SECONDS),
        prefix + "proxy-buffering": "off",
        prefix + "proxy-request-buffering": "off",
        # nginx sizes: `m` is MiB; a bare number is bytes.
        prefix + "proxy-body-size": f"{limit // 2**20}m" if limit % 2**20 == 0 else str(limit),
    }


def service_monitor(spec: PlatformSpec) -> Manifest:
    meta = metadata(spec, spec.owner.name, "metrics")
    meta["labels"].update(spec.observability.service_monitor_labels)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {names.INSTANCE_LABEL: spec.owner.name, TARGET_ROLE_LABEL: "target"}},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": spec.observability.scrape_interval}
            ],
        },
    }


# --------------------------------------------------------------------------- migrations


def _migrated_stores(spec: PlatformSpec) -> list[DataStore]:
    """The data stores some enabled target needs whose kind the migration Job connects to."""
    return [s for s in spec.data_stores.values() if STORE_KINDS[s.name].migrations and s.name in spec.needs]


def migrated_targets(spec: PlatformSpec) -> list[str]:
    """The enabled targets needing a data store that is migrated (StoreKind.migrations)."""
    stores = {store.name for store in _migrated_stores(spec)}
    return [name for name, t in spec.enabled_targets.items() if stores & t.needs]


def migration_job(spec: PlatformSpec) -> Manifest | None:
    """`coder-platform migrate` for the desired image; None when no enabled target has tables.

    A Job's pod template cannot change, so everything it runs is in its name: a new image (or a
    new set of targets, or another database) is a new Job, and the old one is pruned.
    """
    targets = migrated_targets(spec)
    if not targets:
        return None
    env = [
        secret_env(crd.DATA_STORE_URL_ENV[store.name], *url_secret(spec, store))
        for store in _migrated_stores(spec)
    ]
    args = ["migrate", "--target", ",".join(targets)]
    name = child(spec, f"{names.MIGRATION}-{digest([spec.image, args, env], 10)}")
    meta = metadata(spec, name, names.MIGRATION)
    meta["annotations"] = {names.MIGRATION_IMAGE_ANNOTATION: spec.image}
    labels = names.selector_labels(spec.owner.name, names.MIGRATION)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 6,
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(UID),
                    "containers": [
                        {
                            "name": names.MIGRATION,
                            "image": spec.image,
                            "imagePullPolicy": spec.pull_policy,
                            "command": ["coder-platform"],
                            "args": args,
                            "envFrom": [{"configMapRef": {"name": child(spec, "config")}}],
                            "env": env,
                            "securityContext": container_security_context(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
                            "resources": copy.deepcopy(crd.MIGRATION_RESOURCES),
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    **(
                        {"imagePullSecrets": [{"name": s} for s in spec.pull_secrets]}
                        if spec.pull_secrets
                        else {}
                    ),
                },
            },
        },
    }


def rollout_image(spec: PlatformSpec, observed: Observed, workload: str) -> str | None:
    """The image a workload may run now: the desired one once its migration succeeded, else the one
    it runs already; None (not created yet) for a new workload while the migration is pending."""
    if not migrated_targets(spec) or observed.migration_succeeded:
        return spec.image
    return observed.deployed_images.get(workload)


# --------------------------------------------------------------------------- everything


def desired(spec: PlatformSpec, observed: Observed, rand: RandomBytes) -> list[Manifest]:
    """Every child the platform should have now, in the order they are best applied in."""
    config = config_map(spec)
    secrets = generated_secrets(spec, observed.generated, rand)
    out: list[Manifest] = [config, *secrets]
    # Data the pods read, by Secret name, for the config hashes: what will be applied for the
    # generated ones, what exists for the user's.
    secret_data: dict[str, Mapping[str, str]] = {**observed.referenced}
    secret_data.update({s["metadata"]["name"]: s["data"] for s in secrets})
    for store in spec.data_stores.values():
        if store.managed is not None and store.name in spec.needs:
            out += data_store_workload(spec, store)
    job = migration_job(spec)
    # The Job waits for its database: started earlier it would only burn its retries.
    if job is not None and observed.postgres_ready:
        out.append(job)
    for name, workload in spec.workloads.items():
        out.append(target_service(spec, workload))
        image = rollout_image(spec, observed, name)
        out += api_access(spec, workload)
        if image is not None:
            # With an HPA the replicas are the autoscaler's: they are left out of the apply.
            with_replicas = not workload.autoscaling.enabled
            out.append(deployment(spec, workload, image, config, secret_data, with_replicas=with_replicas))
        if workload.autoscaling.enabled:
            out.append(autoscaler(spec, workload))
        if workload.min_replicas > 1:
            out.append(disruption_budget(spec, workload))
    if spec.network_policy:
        out += network_policies(spec)
    if spec.ingress.enabled and spec.ingress.host:
        out.append(ingress(spec))
    if spec.observability.service_monitor and observed.service_monitors:
        out.append(service_monitor(spec))
    return out
