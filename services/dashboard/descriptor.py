"""dashboard as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, read, write

descriptor = Descriptor(
    name="dashboard",
    port=3011,
    title="Dashboard",
    package="coder.services.dashboard",
    # Redis: the gateway's revocation list, read on every call (coder.shared.auth.RevocationList).
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read one's own and the teams' dashboards, their versions and their data"),
        "write": write("Create, save, restore and delete one's own and the teams' dashboards"),
    },
    emits=("dashboard.dashboard.saved", "dashboard.dashboard.deleted"),
    tools=(
        Tool(
            name="dashboard_get",
            operation="GET /v1/dashboards/{dashboard_id}/data",
            description=(
                "A whole dashboard in one call: its panels and what each panel's query reads now from "
                "its target, with the caller's permissions (a slot says forbidden, not_found or timeout "
                "when it cannot show its data)."
            ),
            read_only=True,
            idempotent=True,
        ),
    ),
)
