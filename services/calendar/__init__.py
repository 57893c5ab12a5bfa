"""calendar: calendars of events with time zones and recurrence, free/busy, reminders, and `.ics`.

Modelled on RFC 5545 (iCalendar) and CalDAV: an event is a VEVENT series (DTSTART with its TZID,
RRULE, RDATE, EXDATE) plus its RECURRENCE-ID overrides; occurrences are expanded on request in any
time zone; reminders (VALARM triggers before the start) leave through the outbox when due.
"""
