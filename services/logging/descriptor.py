"""logging as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="logging",
    port=3014,
    title="Logs",
    package="coder.services.logging",
    # Redis: the gateway's revocation list; RabbitMQ: the fingerprints of secret values to redact.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "push": write("Push log lines (they are redacted at ingest)"),
        "read": read("Query log lines, discover labels and tail live"),
        "admin": admin("Set the organization's retention and delete log lines"),
    },
    consumes=("secrets.secret.fingerprinted",),
    tools=(
        Tool(
            name="logging_query",
            operation="GET /v1/query",
            description="Search the organization's logs: a LogQL stream selector with optional line "
            'filters (e.g. {app="api"} |= "timeout"), a time range, levels, trace or request id; '
            "newest first by default.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="logging_labels",
            operation="GET /v1/labels",
            description="List the label names of the organization's log streams (then their values "
            "with logging_label_values) to build a stream selector.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="logging_label_values",
            operation="GET /v1/label/{name}/values",
            description="List the values one label takes across the organization's log streams.",
            read_only=True,
            idempotent=True,
        ),
    ),
)
