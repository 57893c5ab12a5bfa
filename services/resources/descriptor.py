"""resources as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Access, Dependency, Descriptor, Permission, Tool, admin, read

descriptor = Descriptor(
    name="resources",
    port=3018,
    title="Resource quotas and reservations",
    package="coder.services.resources",
    # Redis: the gateway's revocation list (coder.shared.auth.RevocationList); quotas live in Postgres.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read quotas, reservations and the ledger of what is used"),
        "admin": admin("Create, change and delete quotas"),
        # No role grants it: a target about to use resources for a user (execution) reserves them
        # with its workload identity.
        "reserve": Permission(Access.SERVICE, "Reserve resources against quotas and release them"),
    },
    emits=("resources.quota.exceeded",),
    tools=(
        Tool(
            name="resources_my_quotas",
            operation="GET /v1/me",
            description="The quotas that apply to me (my organization's, my team's, my own) with what "
            "is in use and what remains of sandboxes, CPU, memory, storage and AI credits.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="resources_ledger",
            operation="GET /v1/ledger",
            description="What an organization, team or user has used: compute (sandbox, CPU, memory "
            "and storage seconds reserved) and AI spend as the usage service counts it.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="resources_list_reservations",
            operation="GET /v1/reservations",
            description="Reservations of resources held against quotas (active, released, expired), "
            "newest first, filtered by status, user or team.",
            read_only=True,
            idempotent=True,
        ),
    ),
)
