"""The pure parts, without a cluster: spec parsing, manifest builders, the comparison, the status."""

from __future__ import annotations

import base64
import dataclasses
import json
from itertools import count
from typing import Any

import pytest

from coder.gateway.config import GatewaySettings
from coder.operator import builders, deploy, diff, names, status
from coder.operator.builders import Observed
from coder.operator.spec import InvalidSpec, Owner, PlatformSpec, parse
from coder.runner import registry
from coder.shared.target import workload_secret

OWNER = Owner("coder", "prod", "uid-1", generation=3)
READY = Observed(migration_succeeded=True, postgres_ready=True)


def counter_bytes() -> builders.RandomBytes:
    """Deterministic 'random' bytes: a different value per call."""
    calls = count()
    return lambda n: bytes([next(calls) % 256]) * n


def platform(**spec: Any) -> PlatformSpec:
    return parse({"version": "1.0.0", **spec}, OWNER)


def render(spec: PlatformSpec, observed: Observed = READY) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in builders.desired(spec, observed, counter_bytes())}


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod(manifest)["containers"][0]["env"]}


def test_every_registered_target_gets_a_deployment_service_and_policy_on_its_port():
    out = render(platform())
    for name, target in registry.descriptors().items():
        deployment = out[("Deployment", f"coder-{name}")]
        container = pod(deployment)["containers"][0]
        assert container["args"] == ["run", "--target", name, "--host", "0.0.0.0", "--port", str(target.port)]  # noqa: S104
        assert container["ports"] == [
            {"name": "http", "containerPort": target.port},
            {"name": "metrics", "containerPort": 9464},
        ]
        assert out[("Service", f"coder-{name}")]["spec"]["ports"] == [
            {"name": "http", "port": target.port, "targetPort": "http"},
            {"name": "metrics", "port": 9464, "targetPort": "metrics"},
        ]
        assert out[("NetworkPolicy", f"coder-{name}")]["spec"]["ingress"][0]["ports"] == [
            {"protocol": "TCP", "port": target.port},
            {"protocol": "TCP", "port": 9464},
        ]
        # Probes stay on the http port; /metrics is on its own.
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    config = out[("ConfigMap", "coder-config")]["data"]
    assert json.loads(config["CODER_METRICS_URLS"])["usage"] == "http://coder-usage.prod.svc:9464"


def test_every_child_is_owned_by_the_platform():
    for manifest in builders.desired(platform(), READY, counter_bytes()):
        assert manifest["metadata"]["ownerReferences"] == [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": "coder",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert manifest["metadata"]["namespace"] == "prod"
        assert manifest["metadata"]["labels"][names.INSTANCE_LABEL] == "coder"


def test_pods_meet_the_restricted_pod_security_standard_and_have_probes():
    out = render(platform())
    workloads = [m for m in out.values() if m["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert {m["kind"] for m in workloads} == {"Deployment", "StatefulSet", "Job"}
    for manifest in workloads:
        spec = pod(manifest)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
    gateway = pod(out[("Deployment", "coder-gateway")])["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_monolithic_mode_is_one_deployment_behind_the_gateway_service():
    out = render(platform(mode="monolithic"))
    deployments = [key for key in out if key[0] == "Deployment"]
    assert deployments == [("Deployment", "coder-all")]
    container = pod(out[("Deployment", "coder-all")])["containers"][0]
    assert container["args"][:3] == ["run", "--target", "all"]
    service = out[("Service", "coder-gateway")]
    assert service["spec"]["selector"][names.COMPONENT_LABEL] == "all"
    assert json.loads(out[("ConfigMap", "coder-config")]["data"]["CODER_SERVICE_URLS"]) == {}
    # With a target off, the monolith runs just the others.
    first = next(iter(registry.descriptors()))
    some = render(platform(mode="monolithic", targets={first: {"enabled": False}}))
    args = pod(some[("Deployment", "coder-all")])["containers"][0]["args"]
    assert args[2] == ",".join(n for n in registry.descriptors() if n != first)


def test_disabled_targets_and_unused_data_stores_are_left_out():
    targets = registry.descriptors()
    keep = "gateway"
    out = render(platform(targets={n: {"enabled": False} for n in targets if n != keep}))
    assert [k for k in out if k[0] == "Deployment"] == [("Deployment", f"coder-{keep}")]
    statefulsets = {k[1] for k in out if k[0] == "StatefulSet"}
    assert statefulsets == {f"coder-{store}" for store in targets[keep].needs}
    urls = json.loads(out[("ConfigMap", "coder-config")]["data"]["CODER_SERVICE_URLS"])
    assert urls == {keep: f"http://coder-{keep}.prod.svc:{targets[keep].port}"}


def test_external_data_store_is_read_from_the_users_secret():
    out = render(platform(postgres={"external": {"urlSecretRef": {"name": "pg", "key": "dsn"}}}))
    assert ("StatefulSet", "coder-postgres") not in out
    assert ("Secret", "coder-postgres") not in out
    for name, target in registry.descriptors().items():
        env = env_of(out[("Deployment", f"coder-{name}")])
        if "postgres" in target.needs:
            assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "pg", "key": "dsn"}}
        else:
            assert "DATABASE_URL" not in env


def test_generated_secrets_are_made_once_and_then_kept():
    fresh = render(platform())
    keys = fresh[("Secret", "coder-secrets-keys")]["data"]
    ring = json.loads(base64.b64decode(keys["SECRETS_MASTER_KEYS"]))
    assert len(base64.b64decode(ring["k1"])) == 32
    assert base64.b64decode(keys["SECRETS_ACTIVE_KEY_ID"]) == b"k1"
    kek = fresh[("Secret", "coder-gateway-keys")]["data"]["GATEWAY_KEY_ENCRYPTION_KEY"]
    assert len(base64.b64decode(base64.b64decode(kek))) == 32

    existing = {
        "coder-postgres": {"password": "kept-password"},
        "coder-gateway-keys": {"GATEWAY_KEY_ENCRYPTION_KEY": "kept-kek"},
    }
    again = render(platform(), Observed(generated=existing, migration_succeeded=True, postgres_ready=True))
    pg = {k: base64.b64decode(v).decode() for k, v in again[("Secret", "coder-postgres")]["data"].items()}
    assert pg == {
        "password": "kept-password",
        "url": "postgresql://coder:kept-password@coder-postgres.prod.svc:5432/coder",
    }
    assert (
        again[("Secret", "coder-gateway-keys")]["data"]["GATEWAY_KEY_ENCRYPTION_KEY"]
        == base64.b64encode(b"kept-kek").decode()
    )


def test_each_target_gets_the_generated_settings_its_descriptor_names():
    descriptors = registry.descriptors()
    named = {s for d in descriptors.values() for s in d.generated_secrets if s != workload_secret(d.name)}
    # A recipe for each (a workload secret is random bytes), and none the descriptors do not name.
    assert named == set(builders.GENERATED)
    out = render(platform())
    for name, descriptor in descriptors.items():
        secret = out.get(("Secret", f"coder-{name}-keys"))
        refs = pod(out[("Deployment", f"coder-{name}")])["containers"][0]["envFrom"]
        if not descriptor.generated_secrets:
            assert secret is None
            assert {"secretRef": {"name": f"coder-{name}-keys"}} not in refs
            continue
        assert secret is not None
        assert set(secret["data"]) == set(descriptor.generated_secrets)
        assert {"secretRef": {"name": f"coder-{name}-keys"}} in refs


def sandbox_of(spec: PlatformSpec) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in builders.sandbox(spec)}


def test_a_target_calling_the_kubernetes_api_gets_its_own_account_and_a_role_in_the_sandbox():
    descriptors = registry.descriptors()
    calling = {name for name, d in descriptors.items() if d.kube_rules}
    assert "execution" in calling
    spec = platform(targets={"execution": {"env": [{"name": "EXECUTION_KUBE_IMAGE", "value": "py:3"}]}})
    out, sandbox = render(spec), sandbox_of(spec)
    # No Role of any target in the platform's namespace: whoever creates pods there can mount its Secrets.
    assert not {kind for kind, _ in out} & {"Role", "RoleBinding"}
    for name, descriptor in descriptors.items():
        spec_of_pod = pod(out[("Deployment", f"coder-{name}")])
        if name not in calling:
            # No account of its own and no token.
            assert ("ServiceAccount", f"coder-{name}") not in out and ("Role", f"coder-{name}") not in sandbox
            assert "serviceAccountName" not in spec_of_pod, name
            assert spec_of_pod["automountServiceAccountToken"] is False, name
            continue
        assert out[("ServiceAccount", f"coder-{name}")]["metadata"]["namespace"] == "prod"
        role = sandbox[("Role", f"coder-{name}")]
        assert role["metadata"]["namespace"] == "prod-sandbox"
        assert role["rules"] == [rule.manifest() for rule in descriptor.kube_rules]
        binding = sandbox[("RoleBinding", f"coder-{name}")]
        assert binding["metadata"]["namespace"] == "prod-sandbox"
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"coder-{name}",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": f"coder-{name}", "namespace": "prod"}
        ]
        assert (spec_of_pod["serviceAccountName"], spec_of_pod["automountServiceAccountToken"]) == (
            f"coder-{name}",
            True,
        )
    env = env_of(out[("Deployment", "coder-execution")])
    # The descriptor's cluster settings, `{sandbox_namespace}` the platform's sandbox; the spec's env beside.
    assert (env["EXECUTION_BACKEND"], env["EXECUTION_KUBE_NAMESPACE"]) == ("kubernetes", "prod-sandbox")
    assert env["EXECUTION_KUBE_IMAGE"] == "py:3"
    assert "EXECUTION_BACKEND" not in env_of(out[("Deployment", "coder-gateway")])
    # The spec's env wins over a cluster setting.
    jobs_elsewhere = {
        "targets": {"execution": {"env": [{"name": "EXECUTION_KUBE_NAMESPACE", "value": "jobs"}]}}
    }
    assert (
        env_of(render(platform(**jobs_elsewhere))[("Deployment", "coder-execution")])[
            "EXECUTION_KUBE_NAMESPACE"
        ]
        == "jobs"
    )


def test_the_sandbox_namespace_is_restricted_deny_all_and_labelled_with_its_platform():
    sandbox = sandbox_of(platform())
    assert next(iter(sandbox))[0] == "Namespace"  # created before what goes in it
    namespace = sandbox[("Namespace", "prod-sandbox")]
    assert "namespace" not in namespace["metadata"] and "ownerReferences" not in namespace["metadata"]
    labels = namespace["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "warn", "audit")} == {
        "restricted"
    }
    policy = sandbox[("NetworkPolicy", "coder-deny-all")]
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for manifest in sandbox.values():
        meta = manifest["metadata"]
        # Found by labels (no owner reference crosses namespaces): the platform's namespace and name.
        assert meta["labels"][names.OWNER_NAMESPACE_LABEL] == "prod", meta["name"]
        assert meta["labels"][names.INSTANCE_LABEL] == "coder", meta["name"]
        assert meta["labels"][names.MANAGED_BY_LABEL] == names.MANAGED_BY, meta["name"]
        assert "ownerReferences" not in meta
        if manifest["kind"] != "Namespace":
            assert meta["namespace"] == "prod-sandbox"
    assert not any(kind == "ResourceQuota" for kind, _ in sandbox)

    named = sandbox_of(platform(sandbox={"namespace": "jobs", "quota": {"pods": "20"}}))
    assert ("Namespace", "jobs") in named
    assert named[("ResourceQuota", "coder-sandbox")]["spec"] == {"hard": {"pods": "20"}}
    assert {m["metadata"].get("namespace", "jobs") for m in named.values()} == {"jobs"}
    # Nothing without a target calling the API.
    assert builders.sandbox(platform(targets={"execution": {"enabled": False}})) == []


@pytest.mark.parametrize(
    ("sandbox", "owner", "message"),
    [
        ({"namespace": "prod"}, OWNER, "sandbox.namespace: must differ"),
        ({}, dataclasses.replace(OWNER, namespace="n" * 56), "sandbox.namespace: the default"),
    ],
)
def test_a_sandbox_namespace_that_cannot_work_is_refused(sandbox: dict[str, Any], owner: Owner, message: str):
    with pytest.raises(InvalidSpec, match=message):
        parse({"version": "1.0.0", "sandbox": sandbox}, owner)


def test_the_monolith_gets_the_account_of_the_targets_it_serves_and_none_without_them():
    monolith = platform(mode="monolithic")
    assert pod(render(monolith)[("Deployment", "coder-all")])["serviceAccountName"] == "coder-all"
    assert sandbox_of(monolith)[("Role", "coder-all")]["rules"] == [
        rule.manifest() for d in registry.descriptors().values() for rule in d.kube_rules
    ]
    assert env_of(render(monolith)[("Deployment", "coder-all")])["EXECUTION_BACKEND"] == "kubernetes"
    off = platform(mode="monolithic", targets={"execution": {"enabled": False}})
    without = render(off)
    assert not {kind for kind, _ in without} & {"ServiceAccount", "Role", "RoleBinding"}
    assert builders.sandbox(off) == []
    assert pod(without[("Deployment", "coder-all")])["automountServiceAccountToken"] is False


def test_the_operator_holds_what_it_grants():
    """RBAC lets the operator grant only permissions it holds: its ClusterRole covers every target's rules."""
    held = {
        (group, resource, verb)
        for rule in deploy.cluster_role()["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for descriptor in registry.descriptors().values():
        for rule in descriptor.kube_rules:
            for resource in rule.resources:
                assert {(rule.api_group, resource, verb) for verb in rule.verbs} <= held


def _with_caller(spec: PlatformSpec) -> PlatformSpec:
    """`spec` with one more target, `probe`, that calls others for users (a workload secret)."""
    probe = dataclasses.replace(
        spec.targets["secrets"], name="probe", generated_secrets=("PROBE_WORKLOAD_SECRET",)
    )
    return dataclasses.replace(spec, targets={**spec.targets, "probe": probe})


def test_a_calling_targets_workload_secret_is_generated_and_only_that_key_given_to_the_gateway():
    out = render(_with_caller(platform()))
    secret = out[("Secret", "coder-probe-keys")]["data"]
    assert len(base64.b64decode(base64.b64decode(secret["PROBE_WORKLOAD_SECRET"]))) == 32
    gateway = env_of(out[("Deployment", "coder-gateway")])
    assert gateway["PROBE_WORKLOAD_SECRET"] == {
        "secretKeyRef": {"name": "coder-probe-keys", "key": "PROBE_WORKLOAD_SECRET"}
    }
    assert {"secretRef": {"name": "coder-probe-keys"}} not in pod(out[("Deployment", "coder-gateway")])[
        "containers"
    ][0]["envFrom"]
    assert "PROBE_WORKLOAD_SECRET" not in env_of(out[("Deployment", "coder-secrets")])
    # One process serving both reads the whole Secret already.
    monolith = render(_with_caller(platform(mode="monolithic")))
    assert "PROBE_WORKLOAD_SECRET" not in env_of(monolith[("Deployment", "coder-all")])
    refs = pod(monolith[("Deployment", "coder-all")])["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "coder-probe-keys"}} in refs


def test_autoscaling_leaves_replicas_to_the_hpa_and_adds_a_budget():
    out = render(platform(targets={"secrets": {"autoscaling": {"enabled": True, "minReplicas": 2}}}))
    assert "replicas" not in out[("Deployment", "coder-secrets")]["spec"]
    hpa = out[("HorizontalPodAutoscaler", "coder-secrets")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)  # max from spec.defaults
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleUp"]["policies"]
    assert out[("PodDisruptionBudget", "coder-secrets")]["spec"]["maxUnavailable"] == 1
    assert out[("Deployment", "coder-gateway")]["spec"]["replicas"] == 1
    assert ("PodDisruptionBudget", "coder-gateway") not in out
    assert ("PodDisruptionBudget", "coder-usage") in render(platform(targets={"usage": {"replicas": 3}}))


def test_merged_autoscaling_bounds_are_checked():
    with pytest.raises(InvalidSpec, match="minReplicas 4 exceeds maxReplicas 3"):
        platform(
            defaults={"autoscaling": {"enabled": True, "maxReplicas": 3}},
            targets={"usage": {"autoscaling": {"minReplicas": 4}}},
        )


def test_opentelemetry_env_with_downward_api_never_overrides_the_users():
    spec = platform(
        observability={"otlpEndpoint": "http://otel:4318", "samplingRatio": 0.25},
        targets={"usage": {"env": [{"name": "OTEL_SERVICE_NAME", "value": "mine"}]}},
    )
    out = render(spec)
    usage = env_of(out[("Deployment", "coder-usage")])
    assert usage["OTEL_SERVICE_NAME"] == "mine"
    assert list(usage).count("OTEL_SERVICE_NAME") == 1
    gateway = env_of(out[("Deployment", "coder-gateway")])
    assert gateway["OTEL_SERVICE_NAME"] == "coder-gateway"
    assert gateway["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    assert gateway["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert gateway["K8S_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    attributes = dict(pair.split("=", 1) for pair in gateway["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["k8s.pod.name"] == "$(K8S_POD_NAME)"
    assert attributes["k8s.namespace.name"] == "$(K8S_NAMESPACE_NAME)"
    assert attributes["k8s.deployment.name"] == "coder-gateway"
    assert attributes["service.version"] == "1.0.0"


def test_otlp_protocol_reaches_every_target_as_the_standard_variable():
    spec = platform(observability={"otlpEndpoint": "http://otel:4317", "otlpProtocol": "grpc"})
    out = render(spec)
    for name in registry.descriptors():
        env = env_of(out[("Deployment", f"coder-{name}")])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4317"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    unset = env_of(render(platform())[("Deployment", "coder-gateway")])
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in unset and "OTEL_EXPORTER_OTLP_PROTOCOL" not in unset


def test_config_hash_covers_exactly_the_secrets_a_deployment_reads():
    spec = platform(redis={"external": {"urlSecretRef": {"name": "redis"}}})
    before = render(
        spec, Observed(referenced={"redis": {"url": "b2xk"}}, migration_succeeded=True, postgres_ready=True)
    )
    after = render(
        spec, Observed(referenced={"redis": {"url": "bmV3"}}, migration_succeeded=True, postgres_ready=True)
    )
    changed = {
        key[1]
        for key, m in before.items()
        if key[0] == "Deployment" and m["spec"]["template"] != after[key]["spec"]["template"]
    }
    assert changed == {f"coder-{n}" for n, t in registry.descriptors().items() if "redis" in t.needs}


def test_every_container_requests_cpu_and_memory_and_has_a_memory_limit():
    """The targets, the migration Job and the managed stores alike: a pod without requests is
    scheduled anywhere and evicted first, one without a memory limit can starve its node."""
    out = render(platform())
    for manifest in out.values():
        if manifest["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        for container in pod(manifest)["containers"]:
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), manifest["metadata"]["name"]
            assert "memory" in resources.get("limits", {}), manifest["metadata"]["name"]
    sized = platform(
        postgres={"managed": {"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}}}}
    )
    (postgres,) = [
        m
        for m in render(sized).values()
        if m["kind"] == "StatefulSet" and "postgres" in m["metadata"]["name"]
    ]
    assert pod(postgres)["containers"][0]["resources"] == {
        "requests": {"cpu": "2"},
        "limits": {"memory": "8Gi"},
    }


def test_the_migration_gate_holds_the_new_image_back():
    spec = platform(version="2.0.0")
    waiting = Observed(deployed_images={"gateway": "coderide/coder-platform:1.0.0"}, postgres_ready=True)
    out = render(spec, waiting)
    job = next(m for m in out.values() if m["kind"] == "Job")
    assert pod(job)["containers"][0]["image"] == "coderide/coder-platform:2.0.0"
    assert pod(job)["containers"][0]["args"][:2] == ["migrate", "--target"]
    assert (
        pod(out[("Deployment", "coder-gateway")])["containers"][0]["image"] == "coderide/coder-platform:1.0.0"
    )
    assert (
        env_of(out[("Deployment", "coder-gateway")])["OTEL_RESOURCE_ATTRIBUTES"].count(
            "service.version=1.0.0"
        )
        == 1
    )
    # Targets not running yet wait for the migration instead of starting on the old schema.
    assert [k for k in out if k[0] == "Deployment"] == [("Deployment", "coder-gateway")]
    # No database yet: not even the Job.
    assert not any(m["kind"] == "Job" for m in render(spec, Observed()).values())
    # A new version is a new Job (its pod template cannot change).
    old, new = builders.migration_job(platform()), builders.migration_job(platform(version="2.0.0"))
    assert old is not None and new is not None
    assert old["metadata"]["name"] != new["metadata"]["name"]


def test_which_targets_are_migrated_is_read_from_the_data_store_table(monkeypatch: pytest.MonkeyPatch):
    spec = platform()
    with_tables = [n for n, t in registry.descriptors().items() if "postgres" in t.needs]
    assert builders.migrated_targets(spec) == with_tables
    job = builders.migration_job(spec)
    assert job is not None and set(env_of(job)) == {"DATABASE_URL"}
    # Another store kind the Job connects to: its targets are migrated too, with its URL given.
    kinds = {
        **builders.STORE_KINDS,
        "postgres": dataclasses.replace(builders.STORE_KINDS["postgres"], migrations=False),
        "redis": dataclasses.replace(builders.STORE_KINDS["redis"], migrations=True),
    }
    monkeypatch.setattr(builders, "STORE_KINDS", kinds)
    assert builders.migrated_targets(spec) == [
        n for n, t in registry.descriptors().items() if "redis" in t.needs
    ]
    job = builders.migration_job(spec)
    assert job is not None and set(env_of(job)) == {"REDIS_URL"}


def test_ingress_and_gateway_url():
    spec = platform(
        ingress={"enabled": True, "host": "coder.example.com", "tlsSecretName": "tls", "className": "nginx"}
    )
    ingress = render(spec)[("Ingress", "coder-gateway")]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["coder.example.com"], "secretName": "tls"}]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "coder-gateway"
    assert builders.gateway_url(spec) == "https://coder.example.com"
    assert builders.gateway_url(platform()) == "http://coder-gateway.prod.svc:3000"


def test_ingress_nginx_annotations_for_streams_under_the_users():
    nginx = "nginx.ingress.kubernetes.io/"
    ingress = {"enabled": True, "host": "coder.example.com"}
    annotations = render(platform(ingress=ingress))[("Ingress", "coder-gateway")]["metadata"]["annotations"]
    assert annotations == {
        nginx + "proxy-read-timeout": "3600",
        nginx + "proxy-send-timeout": "3600",
        nginx + "proxy-buffering": "off",
        nginx + "proxy-request-buffering": "off",
        nginx + "proxy-body-size": "10m",
    }
    # The body limit is the gateway's: its default, or the one the spec gives the gateway.
    assert GatewaySettings.model_fields["max_body_bytes"].default == builders.GATEWAY_MAX_BODY_BYTES
    for given, size in (("1048576", "1m"), ("1000", "1000")):
        env = [{"name": "GATEWAY_MAX_BODY_BYTES", "value": given}]
        for spec in (
            platform(ingress=ingress, targets={"gateway": {"env": env}}),
            platform(ingress=ingress, mode="monolithic", defaults={"env": env}),
        ):
            meta = render(spec)[("Ingress", "coder-gateway")]["metadata"]
            assert meta["annotations"][nginx + "proxy-body-size"] == size
    # The user's annotations win, key by key.
    mine = {nginx + "proxy-read-timeout": "86400", "traefik.ingress.kubernetes.io/router.tls": "true"}
    spec = platform(ingress={**ingress, "annotations": mine})
    annotations = render(spec)[("Ingress", "coder-gateway")]["metadata"]["annotations"]
    assert annotations[nginx + "proxy-read-timeout"] == "86400"
    assert annotations["traefik.ingress.kubernetes.io/router.tls"] == "true"
    assert annotations[nginx + "proxy-buffering"] == "off"


def test_trusted_proxies_are_given_to_the_gateway_only():
    proxies = {"trustedProxies": ["10.0.0.0/8", "192.0.2.1"]}
    out = render(platform(ingress=proxies))
    assert env_of(out[("Deployment", "coder-gateway")])["CODER_TRUSTED_PROXIES"] == "10.0.0.0/8,192.0.2.1"
    assert "CODER_TRUSTED_PROXIES" not in env_of(out[("Deployment", "coder-secrets")])
    monolith = render(platform(ingress=proxies, mode="monolithic"))[("Deployment", "coder-all")]
    assert env_of(monolith)["CODER_TRUSTED_PROXIES"] == "10.0.0.0/8,192.0.2.1"
    assert "CODER_TRUSTED_PROXIES" not in env_of(render(platform())[("Deployment", "coder-gateway")])


def test_service_monitor_only_when_its_kind_is_served():
    spec = platform(observability={"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    assert ("ServiceMonitor", "coder") not in render(spec)
    served = Observed(migration_succeeded=True, postgres_ready=True, service_monitors=True)
    monitor = render(spec, served)[("ServiceMonitor", "coder")]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


# --------------------------------------------------------------------------- the comparison


def test_subset_comparison_ignores_server_defaults_and_sees_edits():
    desired = diff.with_spec_hash(render(platform())[("Deployment", "coder-gateway")])
    stored = json.loads(json.dumps(desired))
    stored["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
    stored["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = "TCP"  # a default too
    stored["status"] = {"replicas": 1}
    assert not diff.needs_apply(desired, stored)
    stored["spec"]["template"]["spec"]["containers"][0]["image"] = "evil"
    assert diff.needs_apply(desired, stored)


def test_an_entry_someone_added_to_an_owned_list_is_drift():
    desired = diff.with_spec_hash(render(platform())[("Deployment", "coder-gateway")])
    for path in ("env", "ports", "volumeMounts"):
        stored = json.loads(json.dumps(desired))
        stored["spec"]["template"]["spec"]["containers"][0][path].append({"name": "added-by-hand"})
        assert diff.needs_apply(desired, stored), path
    stored = json.loads(json.dumps(desired))
    stored["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    assert diff.needs_apply(desired, stored)


def test_a_field_removed_from_the_spec_changes_the_hash():
    with_env = diff.with_spec_hash(
        render(platform(targets={"usage": {"env": [{"name": "A", "value": "1"}]}}))[
            ("Deployment", "coder-usage")
        ]
    )
    without = diff.with_spec_hash(render(platform())[("Deployment", "coder-usage")])
    assert diff.needs_apply(without, with_env)  # the stored one still has A: the hash tells


def test_quantities_compare_by_value():
    assert diff.contains(
        {"resources": {"limits": {"cpu": "500m"}}}, {"resources": {"limits": {"cpu": "0.5"}}}
    )
    assert diff.contains(
        {"resources": {"requests": {"memory": "1Gi"}}}, {"resources": {"requests": {"memory": "1024Mi"}}}
    )
    assert not diff.contains({"resources": {"limits": {"cpu": "1"}}}, {"resources": {"limits": {"cpu": "2"}}})
    assert not diff.contains({"env": [{"value": "1"}]}, {"env": [{"value": "1.0"}]})


# --------------------------------------------------------------------------- status


def test_status_reports_a_failed_migration_as_degraded():
    spec = platform()
    seen = status.Observation(
        dependencies=[status.Dependency("postgres", "managed", True)],
        migration=status.MigrationState("coder-migrate-x", "Failed", "BackoffLimitExceeded"),
    )
    new = status.compute(spec, {}, seen, {}, "2026-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in new["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "MigrationFailed"
    assert conditions["MigrationsComplete"]["reason"] == "MigrationFailed"
    assert new["phase"] == "Degraded"
    assert new["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in new["conditions"])
    # Computed again later with nothing new: identical, so nothing to patch.
    assert status.status_patch(status.compute(spec, {}, seen, new, "2026-01-01T01:00:00Z"), new) == {}
    events = status.transition_events(new["conditions"], [])
    assert {(e.type, e.reason) for e in events} >= {("Warning", "MigrationFailed")}


def test_managed_store_volumes_are_retained_unless_the_spec_says_delete():
    retained = render(platform())[("StatefulSet", "coder-postgres")]["spec"]
    assert retained["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    deleted = render(platform(postgres={"managed": {"pvcRetentionPolicy": {"whenDeleted": "Delete"}}}))
    policy = deleted[("StatefulSet", "coder-postgres")]["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Delete", "whenScaled": "Retain"}
