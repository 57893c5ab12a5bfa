"""usage as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Access, Dependency, Descriptor, Permission, Tool, admin, read

descriptor = Descriptor(
    name="usage",
    port=3004,
    title="Usage metering and budgets",
    package="coder.services.usage",
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "ingest": admin("Record usage events"),
        "read": read("Read usage events, meters, meter values and budgets"),
        "admin": admin("Create, change and delete meters and budgets"),
        # No role grants it: a target spending for a user (ai) reserves with its workload identity.
        "reserve": Permission(
            Access.SERVICE, "Reserve budget before spending and settle or release the reservation"
        ),
    },
    emits=("usage.budget.exceeded",),
    consumes=("ai.request.completed",),
    tools=(
        Tool(
            name="usage_meters_list",
            operation="GET /v1/meters",
            description="List the organization's usage meters: what each aggregates, over which event type, "
            "and the dimensions it can be grouped by.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="usage_meter_query",
            operation="GET /v1/meters/{slug}/query",
            description="Query one meter's value over a time range, optionally per window and grouped by "
            "its dimensions.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="usage_budgets_list",
            operation="GET /v1/budgets",
            description="List the organization's budgets with their limits, current spend and amounts held.",
            read_only=True,
            idempotent=True,
        ),
    ),
)
