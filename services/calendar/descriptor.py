"""calendar as the platform sees it: data only (see coder.shared.target)."""

from coder.shared.target import Dependency, Descriptor, Tool, admin, read, write

descriptor = Descriptor(
    name="calendar",
    port=3012,
    title="Calendars, recurring events, free/busy and reminders (iCalendar)",
    package="coder.services.calendar",
    needs=frozenset({Dependency.POSTGRES, Dependency.REDIS, Dependency.RABBITMQ}),
    permissions={
        "read": read("Read the organization's calendars, events, occurrences and free/busy"),
        "write": write("Create calendars; change, import and delete events in calendars you own"),
        "admin": admin("Change and delete any calendar of the organization and its events"),
    },
    emits=(
        "calendar.event.created",
        "calendar.event.updated",
        "calendar.event.deleted",
        "calendar.reminder.due",
    ),
    tools=(
        Tool(
            name="calendar_upcoming",
            operation="GET /v1/occurrences",
            description="List the caller's upcoming event occurrences (recurrences expanded) in a time "
            "range and time zone; by default the next 7 days in UTC.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="calendar_freebusy",
            operation="POST /v1/freebusy",
            description="Busy periods (merged) of a set of users over a time range, to find a free slot.",
            read_only=True,
            idempotent=True,
        ),
        Tool(
            name="calendar_create_event",
            operation="POST /v1/calendars/{calendar_id}/events",
            description="Create an event (optionally recurring with an RRULE, with reminders) in a "
            "calendar the caller owns; times are local to `time_zone`.",
        ),
    ),
)
