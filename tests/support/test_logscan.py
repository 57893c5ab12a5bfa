"""The log scanner of the test run finds what it must, through a real logging record."""

from __future__ import annotations

import logging

import pytest

from coder.gateway.tokens import PERSONAL_PREFIX, REFRESH_PREFIX, new_secret
from coder.tests.support.logscan import CANARY, LogCapture, scan

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (
            '{"message": "insert failed", "params": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}',
            "password hash",
        ),
        (f"token={new_secret(PERSONAL_PREFIX)}", "personal access token"),
        (f"refresh {new_secret(REFRESH_PREFIX)}", "refresh token"),
        (f"Authorization: Bearer {JWT}", "JWT"),
        (f'{{"data": {{"k": "{CANARY}-123"}}}}', "planted secret"),
    ],
)
def test_scan_finds_forbidden_values(line: str, what: str) -> None:
    assert [finding.what for finding in scan([line])] == [what]


def test_scan_passes_mentions_without_values() -> None:
    lines = ['{"message": "request", "path": "/auth/tokens", "status": 201}', f"prefix {PERSONAL_PREFIX}abc"]
    assert scan(lines) == []


def test_capture_sees_exception_text_and_extras() -> None:
    capture = LogCapture()
    log = logging.getLogger("coder.tests.logscan")
    log.addHandler(capture)
    log.propagate = False
    try:
        try:
            raise ValueError("[parameters: ('a@example.com', '$argon2id$v=19$m=1,t=1,p=1$x$y')]")
        except ValueError:
            log.exception("insert failed")
        log.warning("upstream", extra={"error": f"token {CANARY}"})
    finally:
        log.removeHandler(capture)
        log.propagate = True
    assert sorted(finding.what for finding in capture.findings()) == ["password hash", "planted secret"]
