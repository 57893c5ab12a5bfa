"""notes as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, read, write
from coder.tests.runner.notes.contracts import NoteCreated

descriptor = Descriptor(
    name="notes",
    port=3999,
    title="Notes",
    package="coder.tests.runner.notes",
    # Redis: the gateway's revocation list, read on every call; RabbitMQ: its outbox's relay.
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("List and read notes"),
        "write": write("Create, change and delete notes"),
    },
    emits=(NoteCreated.event_type,),
)
