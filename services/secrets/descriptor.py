"""secrets as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="secrets",
    port=3003,
    title="Secrets",
    package="coder.services.secrets",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read a secret's value (each read is audited)"),
        "list": read("List secret paths and read their metadata"),
        "write": write("Write a new version of a secret and change its metadata"),
        "delete": write("Soft-delete and undelete versions of a secret"),
        "destroy": admin("Destroy versions or a whole secret for good"),
        "admin": admin("Rewrap stored values under the active master key"),
        "audit": admin("Read the audit trail of secret reads and writes"),
    },
    emits=("secrets.secret.rotated", "secrets.secret.fingerprinted"),
    generated_secrets={
        "SECRETS_MASTER_KEYS": "JSON key id -> 32 random bytes (base64): the keyring that wraps values",
        "SECRETS_ACTIVE_KEY_ID": "The id in SECRETS_MASTER_KEYS new values are encrypted with",
    },
    # Metadata only: no operation that answers a secret's value is ever a tool.
    tools=(
        Tool(
            name="secrets_list",
            operation="GET /v1/metadata",
            description="List secret paths with their project, environment and current version (never "
            "values), optionally under a path prefix.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="secrets_metadata_read",
            operation="GET /v1/metadata/{path}",
            description="Read one secret's settings and the state of each kept version (never values).",
            read_only=True,
            idempotent=True,
        ),
    ),
)
