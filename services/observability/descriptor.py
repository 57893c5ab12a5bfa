"""observability as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="observability",
    port=3020,
    title="Platform health, SLOs, alerts and traces",
    package="coder.services.observability",
    # Redis: the gateway's revocation list; RabbitMQ: ai's request events (GenAI metrics).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        # Platform-wide numbers (every org's traffic summed): admins only.
        "platform": admin("Read platform health, SLO status, alerts and their history (platform-wide)"),
        "admin": admin("Create, change and delete the organization's SLOs and alert rules"),
        "read": read("Read the organization's service map and GenAI metrics"),
        "ingest": write("Send OTLP traces for the organization"),
    },
    emits=("observability.alert.firing", "observability.alert.resolved"),
    consumes=("ai.request.completed",),
    tools=(
        Tool(
            name="observability_health",
            operation="GET /v1/health",
            description="Whether each platform target is up and ready now, from the last poll of its "
            "readiness and /metrics, with its request and 5xx counts.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="observability_slo_status",
            operation="GET /v1/slos",
            description="The organization's SLOs (availability, latency) on platform targets with "
            "good and total requests over their window, error budget remaining and burn rates.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="observability_alerts",
            operation="GET /v1/alerts",
            description="Alert rules that are pending or firing now, with the value that tripped them.",
            read_only=True,
            idempotent=True,
        ),
    ),
)
