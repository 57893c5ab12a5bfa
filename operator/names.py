"""Names every part of the operator agrees on: the API group, labels, annotations, child names."""

from __future__ import annotations

GROUP = "platform.coderide.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CoderPlatform"
PLURAL = "coderplatforms"
SINGULAR = "coderplatform"
SHORT_NAME = "cp"
CRD_NAME = f"{PLURAL}.{GROUP}"

# The field manager of every server-side apply the operator sends; `kubectl get -o yaml
# --show-managed-fields` shows which fields it owns.
FIELD_MANAGER = "coder-operator"
# A second manager that only ever holds `spec.replicas` of a Deployment while an HPA scales it:
# handing the field to it lets the operator drop `replicas` from its own applies without the
# API server resetting the field to its default (server-side apply removes fields a manager drops).
REPLICAS_HANDOVER_MANAGER = "coder-operator-replicas-handover"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
VERSION_LABEL = "app.kubernetes.io/version"
# On what the operator makes outside the CoderPlatform's namespace (the sandbox namespace and the
# objects in it), which no owner reference can reach: the namespace of the CoderPlatform, beside its
# name in INSTANCE_LABEL. They are found, pruned and removed with the CoderPlatform by these labels.
OWNER_NAMESPACE_LABEL = f"{GROUP}/owner-namespace"

APP_NAME = "coder-platform"
MANAGED_BY = "coder-operator"

# The hash of the whole desired object: a change of the spec that only removes a field (which
# the subset comparison cannot see) still changes it, so the child is applied again.
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
# On pod templates: the hash of the ConfigMap and Secret data the pods read, so a change there
# rolls exactly the Deployments that read it.
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
# On the migration Job: the image it migrates to (the gate compares it with the desired image).
MIGRATION_IMAGE_ANNOTATION = f"{GROUP}/migration-image"

# Monolithic mode runs every enabled target in one Deployment under this component name.
MONOLITH = "all"
MIGRATION = "migrate"
DATA_STORES = ("postgres", "redis", "rabbitmq")


def child_name(instance: str, component: str) -> str:
    return f"{instance}-{component}"


def selector_labels(instance: str, component: str) -> dict[str, str]:
    """The labels a workload selects its pods by; they never change, selectors are immutable."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: instance, COMPONENT_LABEL: component}


def instance_labels(instance: str) -> dict[str, str]:
    """What every child carries; the operator lists its children by these."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: instance, MANAGED_BY_LABEL: MANAGED_BY}


def sandbox_labels(namespace: str, instance: str) -> dict[str, str]:
    """What every object of a CoderPlatform outside its namespace carries (see OWNER_NAMESPACE_LABEL)."""
    return {**instance_labels(instance), OWNER_NAMESPACE_LABEL: namespace}


def instance_selector(instance: str) -> str:
    return ",".join(f"{key}={value}" for key, value in instance_labels(instance).items())
