"""A circuit breaker per target: after a run of failures, calls fail fast for a while, then one trial
call decides whether the target is back (closed) or still down (open again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Gauge

STATE = Gauge(
    "gateway_circuit_state",
    "The gateway's circuit breaker per target: 0 closed, 1 half-open, 2 open",
    ["target"],
)


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


LEVELS = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class CircuitBreaker:
    def __init__(
        self, threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    def export(self, target: str) -> None:
        """Show this breaker's state, as it is when scraped, in `gateway_circuit_state{target}`."""
        STATE.labels(target).set_function(lambda: LEVELS[self.state])

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self.clock() - self._opened_at >= self.reset_seconds:
            return State.HALF_OPEN
        return State.OPEN

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one trial call at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_seconds - (self.clock() - self._opened_at))

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self._trial_running = False
        if self._opened_at is not None:
            self._opened_at = self.clock()  # the trial failed: stay open for another period
            return
        self._failures += 1
        if self._failures >= self.threshold:
            self._opened_at = self.clock()

    def release(self) -> None:
        """A call that ended neither way (e.g. the client went away): free the trial slot."""
        self._trial_running = False
