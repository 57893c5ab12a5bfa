"""usage as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.contracts import event_schemas
from coder.shared.contracts.ai import AiRequestCompleted
from coder.shared.contracts.usage import BudgetExceeded
from coder.shared.target import Access, Dependency, Descriptor, Permission, admin, read

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
    emits=(BudgetExceeded.event_type,),
    event_schemas=event_schemas(BudgetExceeded),
    consumes=(AiRequestCompleted.event_type,),
)
