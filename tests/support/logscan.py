"""A scan of everything the test run logged, for values no log line may hold: password hashes, token
strings, and the secret data the tests plant (`CANARY`).

`LogCapture` is a root-logger handler installed for the whole session (tests/conftest.py); it keeps
each record as the process would write it (the JSON formatter, with extras and tracebacks), so a
parameter in an exception message or an `extra` field is caught too. Output of the servers the tests
start as subprocesses is fed in with `add_text`.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from coder.gateway.tokens import INVITATION_PREFIX, PERSONAL_PREFIX, REFRESH_PREFIX
from coder.shared.telemetry import json_formatter

# Written as secret data by the secrets tests; must never reach a log line.
CANARY = "canary-0c7e1d5b-never-log-me"

# A token's random part is `secrets.token_urlsafe(32)`: 43 characters; 20 is plenty to tell a value
# from a mention of the prefix.
_TOKEN_TAIL = r"[A-Za-z0-9_-]{20,}"
PATTERNS: dict[str, re.Pattern[str]] = {
    "password hash": re.compile(r"\$argon2(id|i|d)?\$"),
    "personal access token": re.compile(re.escape(PERSONAL_PREFIX) + _TOKEN_TAIL),
    "refresh token": re.compile(re.escape(REFRESH_PREFIX) + _TOKEN_TAIL),
    "invitation token": re.compile(re.escape(INVITATION_PREFIX) + _TOKEN_TAIL),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\."),
    "planted secret": re.compile(re.escape(CANARY)),
}


@dataclass(frozen=True)
class Finding:
    what: str
    line: str

    def __str__(self) -> str:
        line = self.line if len(self.line) <= 300 else self.line[:300] + "..."
        return f"{self.what}: {line}"


def scan(lines: list[str]) -> list[Finding]:
    return [
        Finding(what, line) for line in lines for what, pattern in PATTERNS.items() if pattern.search(line)
    ]


class LogCapture(logging.Handler):
    """Keeps every formatted record (and any text added) of the run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(json_formatter())
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is still scanned by its parts
            text = f"{record.msg!r} {record.args!r} {record.exc_text or ''}"
        self.add_text(text)

    def add_text(self, text: str) -> None:
        with self._guard:
            self.lines.extend(text.splitlines())

    def findings(self) -> list[Finding]:
        with self._guard:
            return scan(list(self.lines))
