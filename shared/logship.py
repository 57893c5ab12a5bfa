"""Shipping a process's own logs to the `logging` target, when configured (CODER_LOG_SHIP_URL).

A `logging.Handler` that never blocks the code that logs: `emit` formats the record and appends it to
a bounded in-memory buffer; a background thread posts batches to logging's push API (Loki's JSON
shape) with its own HTTP client, so neither a request's task nor the event loop ever waits on it.
A line leaves the buffer only once logging acknowledged its batch (a 2xx): during an outage the
thread keeps the lines and retries with backoff; if the buffer fills, new lines are dropped and
counted, and the next batch that gets through says how many were lost.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry import trace

from coder.shared import context

# The push requests' own access-log lines: shipping them would feed one line per batch back forever.
PUSH_PATH_SUFFIX = "logging/v1/push"


class LogShipper(logging.Handler):
    def __init__(
        self,
        url: str,
        token: str | None,
        labels: Mapping[str, str],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        timeout: float = 5.0,
        formatter: logging.Formatter | None = None,
    ) -> None:
        super().__init__()
        if formatter is not None:
            self.setFormatter(formatter)
        self.url = url
        self.labels = dict(labels)
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.dropped = 0  # lines refused because the buffer was full, not yet reported
        self.shipped = 0  # lines logging acknowledged
        self._buffer: collections.deque[list[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    # --- the logging side: called by any thread, never waits on the network ---

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread or str(getattr(record, "path", "")).endswith(
            PUSH_PATH_SUFFIX
        ):
            return
        try:
            metadata = {"level": record.levelname.lower(), "logger": record.name}
            if rid := context.request_id.get():
                metadata["request_id"] = rid
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                metadata["trace_id"] = format(span.trace_id, "032x")
            entry = [str(time.time_ns()), self.format(record), metadata]
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self.dropped += 1
                return
            self._buffer.append(entry)
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    # --- the shipping thread ---

    def _run(self) -> None:
        backoff = self.flush_seconds
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = self.flush_seconds if self._ship_all() else min(backoff * 2, self.max_backoff_seconds)

    def _ship_all(self) -> bool:
        """Post batches until the buffer is empty; False when logging did not acknowledge one."""
        while True:
            with self._lock:
                batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
                dropped = self.dropped
            if not batch and not dropped:
                return True
            values = list(batch)
            if dropped:
                note = f"log shipper dropped {dropped} lines: its buffer of {self.capacity} was full"
                values.append([str(time.time_ns()), note, {"level": "warn", "logger": __name__}])
            if not self._post(values):
                return False
            with self._lock:
                # Acknowledged: only now do these lines leave the buffer (emit only appends).
                for _ in batch:
                    self._buffer.popleft()
                self.dropped -= dropped
                self.shipped += len(batch)

    def _post(self, values: list[list[Any]]) -> bool:
        body = json.dumps({"streams": [{"stream": self.labels, "values": values}]})
        try:
            response = self._client.post(self.url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError:
            return False
        # A 4xx will not get better by retrying the same lines: they are dropped and counted.
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 408, 429):
            with self._lock:
                self.dropped += len(values)
            return True
        return response.is_success

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout`) until the buffer is shipped."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self.pending() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._client.close()
        super().close()
