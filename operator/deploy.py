"""The operator's own manifests (ServiceAccount, least-privilege RBAC, Deployment), as data.

`coder-platform operator manifests` writes them, with the CRD, under `k8s/`; a test keeps the files
equal to this output. The RBAC lists exactly the calls the operator makes (list, apply = patch
plus create, delete) on exactly the kinds it owns; a test runs the operator under it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from coder.operator import crd, names
from coder.runner import registry

NAMESPACE = "coder-system"
NAME = "coder-operator"
LIVENESS_PORT = 8080
METRICS_PORT = 9090

Manifest = dict[str, Any]

# (API group, resources, verbs) the reconciler needs on the children. Server-side apply is a PATCH
# that creates the object when absent, and the API server then checks `create` as well.
# On the kinds it owns: list (and watch: a changed or deleted child wakes its owner's reconcile),
# apply, delete, and `update` to replace a child another field manager added list entries to.
_OWNED = ("list", "watch", "create", "patch", "update", "delete")
CHILD_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("", ("configmaps", "services"), _OWNED),
    # `get`: the user's Secrets a platform references (external data stores, OIDC) are read by name.
    # Never replaced (they hold generated keys): no `update`.
    ("", ("secrets",), ("get", "list", "watch", "create", "patch", "delete")),
    # Pods are only listed: a stuck pod of the platform's own workloads is reported in its status.
    ("", ("pods",), ("list",)),
    ("apps", ("deployments", "statefulsets"), _OWNED),
    ("batch", ("jobs",), _OWNED),
    # A target calling the Kubernetes API (its descriptor's `kube_rules`) gets its own account, and a
    # Role in the sandbox namespace, which the operator creates if missing (read by name, found by its
    # labels, its labels applied, deleted with the platform; nothing else is ever written to one).
    ("", ("serviceaccounts",), _OWNED),
    ("rbac.authorization.k8s.io", ("roles", "rolebindings"), _OWNED),
    ("", ("namespaces",), ("get", "list", "create", "patch", "delete")),
    ("", ("resourcequotas",), _OWNED),
    ("autoscaling", ("horizontalpodautoscalers",), _OWNED),
    ("policy", ("poddisruptionbudgets",), _OWNED),
    ("networking.k8s.io", ("networkpolicies", "ingresses"), _OWNED),
    ("monitoring.coreos.com", ("servicemonitors",), _OWNED),
)


# Leader election (operator/leader.py): the Lease in the operator's own namespace, by a Role there.
LEASE_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
]
REPLICAS = 2


def image_tag() -> str:
    try:
        return version("coder-platform")
    except PackageNotFoundError:  # pragma: no cover - running from a tree without metadata
        return "latest"


def labels() -> dict[str, str]:
    return {names.NAME_LABEL: NAME, names.PART_OF_LABEL: names.APP_NAME}


def service_account() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
    }


def granted_rules() -> list[dict[str, list[str]]]:
    """What the targets' Roles grant (their descriptors' `kube_rules`): the API server lets the
    operator grant only permissions it holds itself, so it holds these too (rather than `escalate`)."""
    rules: list[dict[str, list[str]]] = []
    for descriptor in registry.descriptors().values():
        rules += [rule.manifest() for rule in descriptor.kube_rules if rule.manifest() not in rules]
    return rules


def cluster_role() -> Manifest:
    rules = [
        {
            "apiGroups": [names.GROUP],
            "resources": [names.PLURAL],
            # kopf watches them and keeps its bookkeeping in their annotations; the reconciler
            # reads each one fresh (get) and the resync lists them.
            "verbs": ["get", "list", "watch", "patch"],
        },
        {"apiGroups": [names.GROUP], "resources": [f"{names.PLURAL}/status"], "verbs": ["get", "patch"]},
        # Events on transitions and writes (posted by the reconciler).
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ]
    rules += [
        {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}
        for group, resources, verbs in CHILD_RULES
    ]
    rules += granted_rules()
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": labels()},
        "rules": rules,
    }


def cluster_role_binding() -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }


def lease_role() -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"{NAME}-leader-election", "namespace": NAMESPACE, "labels": labels()},
        "rules": LEASE_RULES,
    }


def lease_role_binding() -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{NAME}-leader-election", "namespace": NAMESPACE, "labels": labels()},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": f"{NAME}-leader-election",
        },
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }


def deployment(image: str | None = None) -> Manifest:
    image = image or f"{crd.DEFAULT_IMAGE}:{image_tag()}"
    selector = {names.NAME_LABEL: NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
        "spec": {
            # Only the replica holding the Lease reconciles: two are safe, also mid-rollout.
            "replicas": REPLICAS,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**labels(), **selector}},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "operator",
                            "image": image,
                            "command": ["coder-platform"],
                            "args": [
                                "operator",
                                "--liveness",
                                f"http://0.0.0.0:{LIVENESS_PORT}/healthz",
                                "--metrics-port",
                                str(METRICS_PORT),
                            ],
                            # The Lease lives in the operator's own namespace.
                            "env": [
                                {
                                    "name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                }
                            ],
                            "ports": [
                                {"name": "health", "containerPort": LIVENESS_PORT},
                                {"name": "metrics", "containerPort": METRICS_PORT},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "health"},
                                "initialDelaySeconds": 10,
                                "periodSeconds": 20,
                                "timeoutSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def namespace() -> Manifest:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": labels()}}


def files() -> dict[str, list[Manifest]]:
    """Relative path under `k8s/` -> the documents of that file."""
    return {
        "crd/coderplatforms.yaml": [crd.crd_manifest()],
        "operator/namespace.yaml": [namespace()],
        "operator/serviceaccount.yaml": [service_account()],
        "operator/rbac.yaml": [cluster_role(), cluster_role_binding(), lease_role(), lease_role_binding()],
        "operator/deployment.yaml": [deployment()],
    }
