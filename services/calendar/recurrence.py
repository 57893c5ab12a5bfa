"""Recurrence expansion (RFC 5545): RRULE, RDATE, EXDATE and RECURRENCE-ID overrides, in a time zone.

Pure functions over a `Series`, no database. The rule is applied to the start's wall-clock time in
its own zone (dateutil's rrule over a `zoneinfo`-aware start), so a 10:00 Europe/Berlin weekly
meeting stays 10:00 in Berlin across a DST change and its UTC time moves; a wall time the change
skips (02:30 on the spring-forward night) is read with the offset before the gap, as RFC 5545
3.3.5 says. Occurrences are identified by their original start as a UTC instant (their
RECURRENCE-ID), which is what EXDATE and overrides name. All-day events recur on dates: their
instants are local midnights, their length a whole number of days.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as rr

# A series is never walked further than this many instants, for its end (a daily rule with an UNTIL
# centuries away: past it, the end counts as open) nor within one range (an hourly rule with
# BYMINUTE: the rest of the range is left out rather than expanded without bound).
MAX_WALK = 20_000
_UNTIL = re.compile(r"UNTIL=([0-9TZ]+)", re.IGNORECASE)


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError when there is none (tzdata ships the database)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


@dataclass(frozen=True)
class Override:
    """One occurrence edited (RECURRENCE-ID): its own start and end, and the fields it changes."""

    start: datetime
    end: datetime
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Occurrence:
    recurrence_id: datetime  # the original start (UTC)
    start: datetime  # the actual start and end, aware
    end: datetime
    override: Override | None = None


@dataclass(frozen=True)
class Series:
    """An event as stored: its first occurrence, its zone and its recurrence."""

    start: datetime  # aware: the first occurrence's start instant
    end: datetime
    time_zone: str
    all_day: bool = False
    rrule: str | None = None
    exdates: frozenset[datetime] = frozenset()  # UTC instants of cancelled occurrences
    rdates: frozenset[datetime] = frozenset()  # UTC instants of extra occurrences
    overrides: Mapping[datetime, Override] = field(default_factory=dict)  # by recurrence id (UTC)

    @cached_property
    def tz(self) -> ZoneInfo:
        return zone(self.time_zone)

    @cached_property
    def local_start(self) -> datetime:
        return self.start.astimezone(self.tz)

    @cached_property
    def days(self) -> int:
        """An all-day event's length in days (at least one)."""
        return max(1, (self.end.astimezone(self.tz).date() - self.local_start.date()).days)

    @cached_property
    def rule(self) -> rr.rrule | None:
        if self.rrule is None:
            return None
        return parse_rule(self.rrule, self.local_start)

    def end_of(self, start: datetime) -> datetime:
        """The end of an occurrence starting at `start`: the same exact length, or the same number
        of days for an all-day event (a day across a DST change is 23 or 25 hours)."""
        if self.all_day:
            return local_midnight(start.astimezone(self.tz).date() + timedelta(days=self.days), self.tz)
        return start + (self.end - self.start)

    def _instants(self, lo: datetime, hi: datetime) -> Iterator[datetime]:
        """Original starts (UTC) in [lo, hi) of the rule, RDATEs and the first occurrence."""
        if self.rule is None:
            if lo <= self.start < hi:
                yield self.start.astimezone(UTC)
        else:
            # An hour of slack each side: rrule compares wall times, which repeat when clocks go back.
            local_lo = (lo - timedelta(hours=1)).astimezone(self.tz)
            local_hi = (hi + timedelta(hours=1)).astimezone(self.tz)
            for walked, instant in enumerate(self.rule.xafter(local_lo, inc=True)):
                if instant >= local_hi or walked >= MAX_WALK:
                    break
                utc = instant.astimezone(UTC)
                if lo <= utc < hi:
                    yield utc
        for extra in self.rdates:
            if lo <= extra < hi:
                yield extra

    def starting(self, lo: datetime, hi: datetime) -> list[Occurrence]:
        """Occurrences whose actual start is in [lo, hi), by start."""
        return self._expand(lo, hi, lo, hi, overlap=False)

    def between(self, lo: datetime, hi: datetime) -> list[Occurrence]:
        """Occurrences overlapping [lo, hi) (CalDAV's time-range), by start."""
        longest = self.end_of(self.start) - self.start + timedelta(days=1)
        return self._expand(lo - longest, hi, lo, hi, overlap=True)

    def _expand(
        self, search_lo: datetime, search_hi: datetime, lo: datetime, hi: datetime, *, overlap: bool
    ) -> list[Occurrence]:
        found: dict[datetime, Occurrence] = {}
        for rid in self._instants(search_lo, search_hi):
            if rid in self.exdates or rid in self.overrides or rid in found:
                continue
            end = self.end_of(rid)
            if not overlap or end > lo or (end == rid == lo):
                found[rid] = Occurrence(rid, rid.astimezone(self.tz), end.astimezone(self.tz))
        for rid, override in self.overrides.items():
            if rid in self.exdates or not self.is_instance(rid):
                continue
            start, end = override.start, override.end
            inside = (start < hi and (end > lo or start == end == lo)) if overlap else lo <= start < hi
            if inside:
                found[rid] = Occurrence(rid, start.astimezone(self.tz), end.astimezone(self.tz), override)
        return sorted(found.values(), key=lambda o: (o.start, o.recurrence_id))

    def is_instance(self, rid: datetime) -> bool:
        """Whether the series has (or had, before an EXDATE) an occurrence at `rid`."""
        return any(True for _ in self._instants(rid, rid + timedelta(microseconds=1)))

    def span(self) -> tuple[datetime, datetime | None]:
        """[first start, last end) of the whole series; an open end is None."""
        starts = [self.start, *self.rdates, *(o.start for o in self.overrides.values())]
        ends = [self.end, *(self.end_of(r) for r in self.rdates), *(o.end for o in self.overrides.values())]
        if self.rule is not None:
            # dateutil keeps COUNT and UNTIL private: a rule with neither never ends.
            if getattr(self.rule, "_count", None) is None and getattr(self.rule, "_until", None) is None:
                return min(starts), None
            last = None
            for walked, instant in enumerate(self.rule):
                if walked >= MAX_WALK:
                    return min(starts), None
                last = instant
            if last is not None:
                ends.append(self.end_of(last.astimezone(UTC)))
        return min(starts), max(ends)


def parse_rule(text: str, local_start: datetime) -> rr.rrule:
    """The RRULE value `text` (without `RRULE:`) from `local_start`; ValueError when invalid.

    RFC 5545 wants UNTIL in UTC when the start has a zone, but local and date forms are common in
    the wild: they are read in the start's zone."""
    text = text.strip().removeprefix("RRULE:")
    if not text or "\n" in text or "\r" in text:
        raise ValueError("one RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO")
    match = _UNTIL.search(text)
    if match and not match.group(1).upper().endswith("Z"):
        value = match.group(1)
        try:
            naive = (
                datetime.strptime(value, "%Y%m%dT%H%M%S")
                if "T" in value
                else datetime.strptime(value, "%Y%m%d")
            )
        except ValueError:
            raise ValueError(f"UNTIL {value!r} is not a date or date-time") from None
        if "T" not in value:  # a date: the whole of that day counts
            naive = naive.replace(hour=23, minute=59, second=59)
        until = naive.replace(tzinfo=local_start.tzinfo).astimezone(UTC)
        text = text[: match.start(1)] + until.strftime("%Y%m%dT%H%M%SZ") + text[match.end(1) :]
    try:
        rule = rr.rrulestr(text, dtstart=local_start, forceset=False, unfold=False)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"not a valid RRULE ({exc})") from None
    if not isinstance(rule, rr.rrule):
        raise ValueError("one RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO")
    if getattr(rule, "_freq", rr.YEARLY) > rr.HOURLY:  # dateutil keeps FREQ private
        raise ValueError("events recur at most hourly (FREQ=MINUTELY and SECONDLY are not supported)")
    return rule


def instants(values: Sequence[datetime | date], tz: ZoneInfo) -> frozenset[datetime]:
    """EXDATE/RDATE values as UTC instants: a date is its local midnight, a naive time is local."""
    return frozenset(to_instant(v, tz) for v in values)


def to_instant(value: datetime | date, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        return local_midnight(value, tz).astimezone(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)
