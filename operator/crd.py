"""The CoderPlatform CustomResourceDefinition, as data.

The schema is the API's documentation (`kubectl explain coderplatform.spec...` prints these
descriptions), its defaults (a ten-line resource works) and its validation (enums, bounds and CEL
rules are enforced at admission, no webhook). The per-target block has one property per target of
the registry's descriptors (coder.runner.registry), so the list of targets has one source of truth.
`k8s/crd/coderplatforms.yaml` is this module's output (`coder-platform operator crd`).
"""

from __future__ import annotations

import copy
from typing import Any

from coder.operator import names
from coder.runner import registry

Schema = dict[str, Any]

DEFAULT_IMAGE = "coderide/coder-platform"
DEFAULT_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
# The managed stores' resources are a starting point for a small team: size them with the CRD's
# `<store>.managed.resources` (memory limits without CPU limits, as for the targets: no throttling).
DATA_STORE_DEFAULTS: dict[str, dict[str, Any]] = {
    "postgres": {
        "image": "pgvector/pgvector:pg18",
        "port": 5432,
        "storage": "10Gi",
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    },
    "redis": {
        "image": "redis:7.4-alpine",
        "port": 6379,
        "storage": "2Gi",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    },
    "rabbitmq": {
        "image": "rabbitmq:4.1-alpine",
        "port": 5672,
        "storage": "2Gi",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    },
}
# The migration Job imports every target it migrates: more memory than one target at rest.
MIGRATION_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
DATA_STORE_TITLES = {"postgres": "PostgreSQL (with pgvector)", "redis": "Redis", "rabbitmq": "RabbitMQ"}
DATA_STORE_URL_ENV = {"postgres": "DATABASE_URL", "redis": "REDIS_URL", "rabbitmq": "AMQP_URL"}


# --------------------------------------------------------------------------- schema helpers


def obj(
    description: str,
    properties: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    default: Any = None,
    rules: tuple[tuple[str, str], ...] = (),
) -> Schema:
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = list(required)
    if default is not None:
        schema["default"] = default
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": rule, "message": message} for rule, message in rules]
    return schema


# A registry host (with a dot or a port, or localhost) is optional; then lowercase path components.
# No `:tag` after the last slash and no `@digest`: the tag is always spec.version.
IMAGE_REPOSITORY = (
    r"^((localhost|[a-z0-9-]+(\\.[a-z0-9-]+)+)(:[0-9]+)?/|[a-z0-9-]+:[0-9]+/)?"
    r"[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$"
)


def string(description: str, default: str | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "description": description, **extra}
    if default is not None:
        schema["default"] = default
    return schema


def integer(
    description: str, default: int | None = None, minimum: int = 0, maximum: int | None = None
) -> Schema:
    schema: Schema = {"type": "integer", "description": description, "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    if default is not None:
        schema["default"] = default
    return schema


def boolean(description: str, default: bool | None = None) -> Schema:
    schema: Schema = {"type": "boolean", "description": description}
    if default is not None:
        schema["default"] = default
    return schema


def string_map(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def free_form(description: str) -> Schema:
    """A Kubernetes type passed through to the pods as is (the API server validates it there)."""
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True}


def quantity_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
            # Bounds the estimated cost of the CEL rules that compare requests with limits.
            "maxLength": 64,
        },
    }


def secret_key_ref(description: str, default_key: str) -> Schema:
    return obj(
        description,
        {
            "name": string("Name of a Secret in the CoderPlatform's namespace.", minLength=1),
            "key": string("Key inside the Secret.", default=default_key, minLength=1),
        },
        required=("name",),
    )


# --------------------------------------------------------------------------- spec pieces


def _within_limits(requests: tuple[str, str], limits: tuple[str, str]) -> str:
    """CEL: no cpu or memory request above its limit. Each side is (whether resource `k` is set, its
    value). Quantities are int-or-string (`dyn` in CEL, at most 64 characters): `quantity()` takes a
    string only, so values go through `string()`, and `isQuantity` guards it (a malformed value would
    fail the rule; the schema's pattern refuses it with its own message). Values are read from the
    maps directly: a list literal or an optional's `orValue` in between makes their size unknown to
    the API server's cost estimate, which then refuses the CRD (Kubernetes' CEL has no `cel.bind`)."""
    (has_request, request), (has_limit, limit) = requests, limits
    return (
        f"['cpu', 'memory'].all(k, !{has_request} || !{has_limit} || !isQuantity(string({request})) "
        f"|| !isQuantity(string({limit})) "
        f"|| quantity(string({request})).compareTo(quantity(string({limit}))) <= 0)"
    )


def _entry(block: str, kind: str) -> tuple[str, str]:
    """(whether `block.kind` has resource `k`, its value), for `_within_limits`."""
    return f"(has({block}.{kind}) && k in {block}.{kind})", f"{block}.{kind}[k]"


def _merged_entry(own: str, defaults: str, kind: str) -> tuple[str, str]:
    """The target's own entry, else the defaults' (per key, as operator/spec.py merges them)."""
    (has_own, own_value), (has_default, default_value) = _entry(own, kind), _entry(defaults, kind)
    return f"({has_own} || {has_default})", f"({has_own} ? {own_value} : {default_value})"


def _resources(default: dict[str, Any] | None, *, checked: bool = True) -> Schema:
    """`checked`: a request above its limit is refused here; a target's own block is checked merged
    with `spec.defaults` instead (`merged_rules`)."""
    rule = (
        _within_limits(_entry("self", "requests"), _entry("self", "limits")),
        "a cpu or memory request exceeds its limit",
    )
    return obj(
        "Compute resources of each container (as in a Pod's `resources`).",
        {
            "requests": quantity_map("Minimum resources, e.g. `cpu: 100m`, `memory: 256Mi`."),
            "limits": quantity_map("Maximum resources, e.g. `memory: 512Mi`."),
        },
        default=copy.deepcopy(default),
        rules=(rule,) if checked else (),
    )


def _autoscaling(with_defaults: bool) -> Schema:
    d = with_defaults
    return obj(
        "A HorizontalPodAutoscaler (autoscaling/v2) for the target. While it is on, the operator never "
        "writes the Deployment's replicas (the autoscaler owns them) and `replicas` is ignored.",
        {
            "enabled": boolean("Create the autoscaler.", False if d else None),
            "minReplicas": integer("Fewest replicas.", 1 if d else None, minimum=1, maximum=1000),
            "maxReplicas": integer("Most replicas.", 5 if d else None, minimum=1, maximum=1000),
            "targetCPUUtilizationPercentage": integer(
                "Average CPU utilization (percent of requests) to scale at.", 75 if d else None, 1, 100
            ),
            "targetMemoryUtilizationPercentage": integer(
                "Average memory utilization (percent of requests) to scale at; unset: CPU only.", None, 1, 100
            ),
            "scaleDownStabilizationSeconds": integer(
                "How long load must stay low before scaling down (the HPA's `behavior.scaleDown`).",
                300 if d else None,
                0,
                3600,
            ),
        },
        default={} if d else None,
        # A target's own block is checked merged with spec.defaults (`merged_rules`). The guards are
        # for the API server's check of the `{}` default, which it makes without the nested defaults.
        rules=(
            (
                "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            ),
        )
        if d
        else (),
    )


def _env() -> Schema:
    return {
        "type": "array",
        "description": "Extra environment variables (as in a container's `env`). They win over the "
        "operator's own (OTEL_*, CODER_*), which are only added for names not listed here.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": obj(
            "An environment variable.",
            {
                "name": string("Variable name.", minLength=1),
                "value": string("Literal value."),
                "valueFrom": free_form("A source, as in a container's `env[].valueFrom`."),
            },
            required=("name",),
            rules=(("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both"),),
        ),
    }


def _pod_template() -> Schema:
    return obj(
        "Overrides for the pod template of the target's Deployment.",
        {
            "labels": string_map("Extra pod labels."),
            "annotations": string_map("Extra pod annotations."),
            "nodeSelector": string_map("Node selector."),
            "tolerations": {
                "type": "array",
                "description": "Tolerations (as in a Pod's `tolerations`).",
                "items": free_form("A toleration."),
            },
            "affinity": free_form("Affinity (as in a Pod's `affinity`)."),
            "priorityClassName": string("PriorityClass of the pods."),
        },
    )


def target_settings(description: str, *, with_defaults: bool) -> Schema:
    """The settings of a target; in `defaults` with schema defaults, per target without (unset inherits)."""
    d = with_defaults
    return obj(
        description,
        {
            "enabled": boolean(
                "Run this target. A disabled target's children are deleted.", True if d else None
            ),
            "replicas": integer("Pod replicas when autoscaling is off.", 1 if d else None, 0, 100),
            "workers": integer(
                "Server processes in each pod, sharing its port (`run --workers`): one uses one CPU; "
                "give the pod as many CPUs as workers. Above one, the pod serves no /metrics (each "
                "worker counts alone): scale with replicas where you scrape.",
                1 if d else None,
                1,
                64,
            ),
            "resources": _resources(DEFAULT_RESOURCES if d else None, checked=d),
            "autoscaling": _autoscaling(d),
            "env": _env(),
            "podTemplate": _pod_template(),
        },
        default={} if d else None,
    )


def merged_rules() -> list[Schema]:
    """Spec-level CEL on each target's settings as the operator merges them (operator/spec.py: a
    target's field over the one of `spec.defaults`, resource maps key by key), which no rule inside
    the target's block can see. Each applies once the target sets the block itself (otherwise the
    defaults' own rules have already spoken), and points at it with `fieldPath`."""
    rules = []
    for name in registry.descriptors():
        own = f"self.targets.?{name}"
        block, defaults = f"self.targets.{name}.resources", "self.defaults.resources"
        resources = _within_limits(
            _merged_entry(block, defaults, "requests"), _merged_entry(block, defaults, "limits")
        )
        rules += [
            {
                "rule": f"!has(self.targets.{name}) || !has({block}) || {resources}",
                "message": f"targets.{name}.resources: a cpu or memory request exceeds its limit "
                "(after merging spec.defaults.resources)",
                "fieldPath": f".targets.{name}.resources",
            },
            {
                "rule": f"!{own}.?autoscaling.hasValue() || "
                f"{own}.?autoscaling.?minReplicas.orValue(self.defaults.autoscaling.minReplicas) <= "
                f"{own}.?autoscaling.?maxReplicas.orValue(self.defaults.autoscaling.maxReplicas)",
                "message": f"targets.{name}.autoscaling.minReplicas must not exceed maxReplicas "
                "(after merging spec.defaults.autoscaling)",
                "fieldPath": f".targets.{name}.autoscaling",
            },
        ]
    return rules


def _targets() -> Schema:
    properties = {}
    for target in registry.descriptors().values():
        needs = ", ".join(sorted(target.needs)) or "no data store"
        properties[target.name] = target_settings(
            f"{target.title}: `coder-platform run --target {target.name}` on port {target.port} "
            f"(needs {needs}). Unset fields inherit from `spec.defaults`.",
            with_defaults=False,
        )
    return obj(
        "Per-target settings, by target name; each field left unset takes its value from `spec.defaults`.",
        properties,
        default={},
    )


def _data_store(name: str) -> Schema:
    title = DATA_STORE_TITLES[name]
    defaults = DATA_STORE_DEFAULTS[name]
    managed = obj(
        f"Run {title} in the cluster: a StatefulSet with a PersistentVolumeClaim, a Service and a "
        "generated password Secret.",
        {
            "image": string("Container image.", defaults["image"]),
            "storage": {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "x-kubernetes-int-or-string": True,
                "description": "Size of the data volume. Immutable (volume claims cannot change).",
                "default": defaults["storage"],
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": f"{name}.managed.storage is immutable"}
                ],
            },
            "storageClassName": {
                **string("StorageClass of the data volume; unset: the cluster's default. Immutable."),
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": f"{name}.managed.storageClassName is immutable"}
                ],
            },
            "resources": _resources(defaults["resources"]),
            "pvcRetentionPolicy": obj(
                "The StatefulSet's persistentVolumeClaimRetentionPolicy: whether the data volume "
                "outlives the store. Retain (the default) keeps the PersistentVolumeClaim, and the "
                "data, after the CoderPlatform is deleted: delete it by hand when the data is no longer "
                "wanted. Delete removes it with the StatefulSet.",
                {
                    "whenDeleted": string(
                        "When the StatefulSet (or the CoderPlatform) is deleted.",
                        "Retain",
                        enum=["Retain", "Delete"],
                    ),
                    "whenScaled": string(
                        "When the StatefulSet is scaled down.", "Retain", enum=["Retain", "Delete"]
                    ),
                },
                default={},
            ),
        },
        rules=(
            (
                "has(self.storageClassName) == has(oldSelf.storageClassName)",
                f"{name}.managed.storageClassName cannot be added or removed",
            ),
        ),
    )
    external = obj(
        f"Use an existing {title}: its URL is read from a Secret.",
        {
            "urlSecretRef": secret_key_ref(
                f"The Secret key holding the URL (passed to the targets as {DATA_STORE_URL_ENV[name]}).",
                "url",
            )
        },
        required=("urlSecretRef",),
    )
    return obj(
        f"{title}: `managed` (run by the operator, the default) or `external` (exactly one of them).",
        {"managed": managed, "external": external},
        default={"managed": {}},
        rules=(
            (
                "has(self.managed) != has(self.external)",
                f"set exactly one of {name}.managed or {name}.external",
            ),
        ),
    )


def _ingress() -> Schema:
    return obj(
        "An Ingress to the gateway (port 3000), the platform's one public entry point.",
        {
            "enabled": boolean("Create the Ingress.", False),
            "host": string(
                "Public host name, e.g. `coder.example.com`.", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
            ),
            "className": string("IngressClass; unset: the cluster's default."),
            "tlsSecretName": string("A TLS Secret for the host; unset: plain HTTP."),
            "annotations": string_map(
                "Annotations of the Ingress (controller-specific settings), over the operator's own for "
                "ingress-nginx (long read and send timeouts and no buffering for SSE and WebSocket, a body "
                "size limit matching the gateway's), which other controllers ignore."
            ),
            "trustedProxies": {
                "type": "array",
                "description": "Addresses or CIDRs of the proxies in front of the gateway (the ingress "
                "controller's pods, a load balancer) whose X-Forwarded-For the gateway believes "
                "(CODER_TRUSTED_PROXIES), also without `enabled`. Empty: the peer's own address counts for "
                "rate limits and audit entries.",
                "maxItems": 64,
                "items": {
                    "type": "string",
                    "maxLength": 64,
                    "x-kubernetes-validations": [
                        {
                            "rule": "isIP(self) || isCIDR(self)",
                            "message": "ingress.trustedProxies entries must be IP addresses or CIDRs, "
                            "e.g. 10.0.0.0/8",
                        }
                    ],
                },
            },
        },
        default={},
        rules=(
            (
                "!has(self.enabled) || !self.enabled || has(self.host)",
                "ingress.host is required when ingress.enabled is true",
            ),
        ),
    )


def _auth() -> Schema:
    return obj(
        "Sign-in settings of the gateway.",
        {
            "localAccounts": boolean("Allow local accounts (email and password).", True),
            "openSignup": boolean(
                "Anyone may sign up; otherwise only the first user and invited people.", False
            ),
            "oidc": obj(
                "OpenID Connect sign-in (e.g. Google).",
                {
                    "issuer": string("Issuer URL with a discovery document.", "https://accounts.google.com"),
                    "clientId": string("OAuth client id.", minLength=1),
                    "clientSecretRef": secret_key_ref(
                        "The Secret key holding the OAuth client secret.", "client-secret"
                    ),
                    "allowedDomains": {
                        "type": "array",
                        "description": "Only addresses in these domains may sign in (empty: any).",
                        "items": {"type": "string"},
                    },
                },
                required=("clientId", "clientSecretRef"),
            ),
        },
        default={},
    )


def _observability() -> Schema:
    return obj(
        "OpenTelemetry and Prometheus wiring of every target.",
        {
            "otlpEndpoint": string(
                "OTLP collector endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): `http://otel-collector:4318` for"
                " http/protobuf, `http://otel-collector:4317` for grpc; unset: no export (a target's own"
                " OTEL_EXPORTER_OTLP_TRACES_ENDPOINT in `env` also turns it on)."
            ),
            "otlpProtocol": string(
                "OTLP protocol of the exporter (OTEL_EXPORTER_OTLP_PROTOCOL).",
                "http/protobuf",
                enum=["http/protobuf", "grpc"],
            ),
            "samplingRatio": {
                "type": "number",
                "description": "Fraction of new traces sampled (a sampled parent is always followed).",
                "minimum": 0,
                "maximum": 1,
                "default": 1,
            },
            "propagators": string("OTEL_PROPAGATORS.", "tracecontext,baggage"),
            "serviceMonitor": obj(
                "A Prometheus Operator ServiceMonitor scraping every target's `metrics` port (9464; created "
                "only if its CRD is installed).",
                {
                    "enabled": boolean("Create the ServiceMonitor.", False),
                    "interval": string("Scrape interval.", "30s", pattern=r"^[0-9]+(ms|s|m|h)$"),
                    "labels": string_map("Labels the Prometheus selects ServiceMonitors by."),
                },
                default={},
            ),
        },
        default={},
    )


def _network_policy() -> Schema:
    return obj(
        "NetworkPolicies: targets and data stores accept traffic only from this platform's pods; the "
        "gateway accepts it from anywhere.",
        {
            "enabled": boolean("Create the NetworkPolicies.", True),
            "additionalIngressFrom": {
                "type": "array",
                "description": "More peers (as in a NetworkPolicy's `ingress[].from`) allowed to "
                "every target, e.g. the namespace of Prometheus.",
                "items": free_form("A NetworkPolicyPeer."),
            },
        },
        default={},
    )


def _sandbox() -> Schema:
    return obj(
        "Where the targets that run users' code start their workloads (execution: a Job per run): a "
        "namespace apart from the platform's, since whoever may create pods in a namespace can mount "
        "its Secrets. The operator creates it if missing (Pod Security `restricted` enforced, a "
        "deny-all NetworkPolicy) and puts there the Roles those targets' accounts need; none is left "
        "in the platform's namespace. A namespace that already exists is used as it is (label it for "
        "Pod Security yourself): the operator adds only its own objects and never deletes it.",
        {
            "namespace": string(
                "The sandbox namespace; unset: `<the CoderPlatform's namespace>-sandbox`. It must "
                "differ from the CoderPlatform's namespace, and from any other CoderPlatform's "
                "sandbox (the second one is refused: Degraded, ChildRefused).",
                minLength=1,
                maxLength=63,
                pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            ),
            "quota": quantity_map(
                "A ResourceQuota's `hard` limits for the whole sandbox, e.g. `pods: 20`, "
                "`limits.memory: 16Gi`; unset: no quota (each run has limits of its own)."
            ),
        },
        default={},
    )


def spec_schema() -> Schema:
    schema = obj(
        "The desired Coder Platform: which targets run, how, and on which data stores.",
        {
            "version": string(
                "Platform version: the image tag every target runs. Changing it runs the database "
                "migration Job first; targets roll out only after it succeeded.",
                pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
            ),
            "image": obj(
                "The one container image of every target (the target is an argument).",
                {
                    "repository": {
                        **string(
                            "Image repository, without tag or digest (the tag is `spec.version`): an "
                            "optional registry host[:port], then lowercase path components.",
                            DEFAULT_IMAGE,
                            minLength=1,
                            maxLength=255,
                        ),
                        "x-kubernetes-validations": [
                            {
                                "rule": f"self.matches('{IMAGE_REPOSITORY}')",
                                "message": "image.repository must be a lowercase repository without spaces, "
                                "tag or digest, e.g. registry.example.com:5000/coder/platform "
                                "(the tag is spec.version)",
                            }
                        ],
                    },
                    "pullPolicy": string(
                        "Image pull policy.", "IfNotPresent", enum=["Always", "IfNotPresent", "Never"]
                    ),
                    "pullSecrets": {
                        "type": "array",
                        "description": "Names of image pull Secrets.",
                        "items": {"type": "string"},
                    },
                },
                default={},
            ),
            "mode": string(
                "`microservices`: a Deployment per target. `monolithic`: one Deployment running every "
                "enabled target in one process (configured by `defaults`; per target only `enabled` counts).",
                "microservices",
                enum=["microservices", "monolithic"],
            ),
            "environment": string(
                "CODER_ENVIRONMENT of every target; outside `development` the development-only "
                "defaults are refused.",
                "production",
                enum=["production", "test", "development"],
            ),
            "paused": boolean("Stop all writes to the children (maintenance); status still updates.", False),
            "defaults": target_settings("Settings every target starts from.", with_defaults=True),
            "targets": _targets(),
            "ingress": _ingress(),
            "postgres": _data_store("postgres"),
            "redis": _data_store("redis"),
            "rabbitmq": _data_store("rabbitmq"),
            "auth": _auth(),
            "observability": _observability(),
            "networkPolicy": _network_policy(),
            "sandbox": _sandbox(),
        },
        required=("version",),
    )
    schema["x-kubernetes-validations"] = merged_rules()
    return schema


def _condition() -> Schema:
    return obj(
        "A condition, as in `metav1.Condition`.",
        {
            "type": string("Ready, DependenciesReady, MigrationsComplete, Progressing or Degraded."),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string("A CamelCase reason, e.g. MissingSecret or MigrationFailed."),
            "message": string("What a person should know."),
            "lastTransitionTime": string("When the status last changed.", format="date-time"),
            "observedGeneration": integer("The spec generation the condition was computed from."),
        },
        required=("type", "status"),
    )


def status_schema() -> Schema:
    # Every status field is declared: the API server prunes undeclared ones silently.
    return obj(
        "What the operator observed and did.",
        {
            "observedGeneration": integer("The last spec generation the operator reconciled."),
            "phase": string("Summary of the conditions: Pending, Progressing, Ready, Degraded or Paused."),
            "version": string("The version the targets run (after its migration succeeded)."),
            "url": string("Where the gateway is reached: the Ingress URL, or the in-cluster Service URL."),
            "readyTargets": string("Ready targets out of enabled ones, e.g. `3/3`."),
            "conditions": {
                "type": "array",
                "description": "Ready (the summary) and the specific conditions behind it.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": _condition(),
            },
            "targets": {
                "type": "array",
                "description": "Readiness of each running target (one `all` entry in monolithic mode).",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": obj(
                    "A target's Deployment as observed.",
                    {
                        "name": string("Target name."),
                        "replicas": integer("Desired replicas."),
                        "readyReplicas": integer("Ready replicas."),
                        "updatedReplicas": integer("Replicas on the current pod template."),
                        "image": string("Image of the pod template."),
                        "autoscaling": boolean("Whether an HPA scales it."),
                    },
                    required=("name",),
                ),
            },
            "dependencies": {
                "type": "array",
                "description": "PostgreSQL, Redis and RabbitMQ as observed.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": obj(
                    "A data store.",
                    {
                        "name": string("postgres, redis or rabbitmq."),
                        "mode": string("managed or external."),
                        "ready": boolean("Reachable as far as the operator can tell."),
                        "message": string("Why it is not ready."),
                    },
                    required=("name",),
                ),
            },
            "migration": obj(
                "The migration Job of the desired version.",
                {
                    "job": string("Name of the Job."),
                    "image": string("Image it migrates to."),
                    "state": string("Waiting, Running, Succeeded or Failed."),
                },
            ),
        },
    )


def crd_manifest() -> dict[str, Any]:
    columns = [
        (
            "Ready",
            "string",
            '.status.conditions[?(@.type=="Ready")].status',
            "Whether the platform serves.",
            0,
        ),
        ("Phase", "string", ".status.phase", "Summary of the conditions.", 0),
        ("Version", "string", ".status.version", "Version the targets run.", 0),
        ("URL", "string", ".status.url", "Where the gateway is reached.", 0),
        ("Age", "date", ".metadata.creationTimestamp", "Age.", 0),
        ("Targets", "string", ".status.readyTargets", "Ready out of enabled targets.", 1),
        ("Mode", "string", ".spec.mode", "microservices or monolithic.", 1),
        ("Desired", "string", ".spec.version", "Version asked for.", 1),
        ("Paused", "boolean", ".spec.paused", "Writes stopped.", 1),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": names.CRD_NAME, "labels": {names.PART_OF_LABEL: names.APP_NAME}},
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": [names.SHORT_NAME],
                "categories": ["coder"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": n,
                            "type": t,
                            "jsonPath": p,
                            "description": d,
                            **({"priority": 1} if prio else {}),
                        }
                        for n, t, p, d, prio in columns
                    ],
                    "schema": {
                        "openAPIV3Schema": obj(
                            "CoderPlatform deploys the Coder Platform (the gateway and its services, their "
                            "data stores, migrations and wiring) into its namespace.",
                            {
                                "apiVersion": string("API version of this object."),
                                "kind": string("Kind of this object."),
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            required=("spec",),
                        )
                    },
                }
            ],
        },
    }


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Fill in schema defaults the way the API server does (structural defaulting), on a copy.

    The operator parses specs through this too, so an object admitted by an older CRD, or a spec
    built in a unit test, reads exactly as one defaulted by the API server.
    """
    if isinstance(value, dict) and schema.get("type") == "object":
        result = dict(value)
        for key, sub in schema.get("properties", {}).items():
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = apply_defaults(sub, result[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in result.keys() - schema.get("properties", {}).keys():
                result[key] = apply_defaults(extra, result[key])
        return result
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value
