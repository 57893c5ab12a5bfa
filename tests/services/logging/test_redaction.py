"""Redaction at ingest: each kind of secret or personal data a line may carry never lands, and the
values stored in `secrets` are found by their fingerprints (secrets never hands out values)."""

from __future__ import annotations

import base64
import json
import secrets
import uuid

import pytest
from sqlalchemy import select

from coder.services.logging.models import Line, SecretFingerprint
from coder.services.logging.redaction import Fingerprints, Redactor
from coder.shared.contracts.secrets import fingerprint, fingerprints
from coder.tests.services.logging.factories import lines, push, stream
from coder.tests.support.logscan import CANARY
from coder.tests.support.platform import Platform, wait_until
from coder.tests.support.tokens import TestSigner


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


JWT = f"{_b64({'alg': 'EdDSA', 'kid': 'k'})}.{_b64({'sub': 'u1', 'org': 'o'})}.{'s' * 86}"
PAT = "cdr_pat_" + secrets.token_urlsafe(32)
OPENAI = "sk-proj-" + secrets.token_urlsafe(30)
ANTHROPIC = "sk-ant-api03-" + secrets.token_urlsafe(40)
AWS = "AKIA" + "ABCDEFGHIJKLMNOP"
GITHUB = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"

CASES = [
    ("jwt", f"calling with {JWT} now", JWT),
    ("bearer", "Authorization: Bearer abc.def-ghi_jkl012", "abc.def-ghi_jkl012"),
    ("platform-token", f"token {PAT} used", PAT),
    ("api-key", f"openai key {OPENAI}", OPENAI),
    ("api-key", f"anthropic={ANTHROPIC}", ANTHROPIC),
    ("aws-key", f"aws {AWS} in use", AWS),
    ("github-token", f"push with {GITHUB}", GITHUB),
    ("credential", "login user=bob password=hunter2 ok", "hunter2"),
    ("credential", '{"db_password": "S3cr3t!x", "user": "bob"}', "S3cr3t!x"),
    ("credential", "client_secret: 'abc123xyz'", "abc123xyz"),
    ("url-password", "postgres://app:pa55word@db:5432/main", "pa55word"),
    ("email", "invited jane.doe+ide@example.co.uk to the org", "jane.doe+ide@example.co.uk"),
    (
        "private-key",
        "key -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end",
        "MIIEow",
    ),
]


@pytest.mark.parametrize(("kind", "line", "planted"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_kind_is_redacted(kind: str, line: str, planted: str) -> None:
    redactor = Redactor(Fingerprints("org"))
    redacted = redactor.redact(line)
    assert planted not in redacted
    assert f"[REDACTED:{kind}]" in redacted
    assert redactor.counts.get(kind, 0) >= 1


def test_ordinary_lines_are_left_alone() -> None:
    redactor = Redactor(Fingerprints("org"))
    for line in [
        "GET /api/usage/v1/meters 200 12ms",
        "prompt_tokens=120 completion_tokens=30 max_tokens=4096",
        "token expired for session 42",
        'level=info msg="password changed" user=u1',
    ]:
        assert redactor.redact(line) == line
    assert redactor.counts == {}


def test_secret_values_are_found_by_fingerprint_however_quoted() -> None:
    value = "Zq7-long-enough-value"
    found = fingerprints("org-a", {"nested": {"key": value}, "short": "abc", "n": 12345678901})
    assert {f.length for f in found} == {len(value), 11}  # "abc" is too short to fingerprint
    secrets_of_a = Fingerprints("org-a", {bytes.fromhex(f.digest) for f in found}, {f.length for f in found})
    redactor = Redactor(secrets_of_a)
    for line in [
        f"value {value} here",
        f'config={{"k":"{value}"}}',
        f"https://x.example/cb?key={value}&a=1",
        f"user:{value}@host",
        "id 12345678901 seen",
    ]:
        redacted = redactor.redact(line)
        assert value not in redacted and "12345678901" not in redacted, redacted
        assert "[REDACTED:secret]" in redacted
    # A value that merely contains the secret is another token; another org's hash never matches.
    assert Redactor(secrets_of_a).redact(f"x{value}x") == f"x{value}x"
    assert fingerprint("org-b", value) not in secrets_of_a.digests


async def test_push_redacts_lines_metadata_and_labels(
    platform: Platform, signer: TestSigner, org: str
) -> None:
    h = signer.headers(org)
    app = f"app-{uuid.uuid4().hex[:8]}"
    answer = await push(
        platform,
        h,
        stream(
            {"app": app, "owner": "ops@example.com"},
            (f"auth with {JWT} for jane@example.com", {"header": f"Bearer {PAT}", "trace_id": "t1"}),
            f"key={OPENAI} aws={AWS}",
        ),
    )
    assert answer["redacted"] == {"email": 2, "jwt": 1, "platform-token": 1, "api-key": 1, "aws-key": 1}
    async with platform.runtime.sessions() as session:
        stored = (
            await session.execute(select(Line).where(Line.org_id == org, Line.trace_id == "t1"))
        ).scalar_one()
    assert JWT not in stored.line and "jane@example.com" not in stored.line
    assert PAT not in json.dumps(stored.meta)
    items = await lines(platform, h, f'{{app="{app}"}}', direction="forward")
    assert items == [
        "auth with [REDACTED:jwt] for [REDACTED:email]",
        "key=[REDACTED:api-key] aws=[REDACTED:aws-key]",
    ]
    names = (await platform.client.get("/api/logging/v1/label/owner/values", headers=h)).json()
    assert names == {"data": ["[REDACTED:email]"]}


async def test_values_stored_in_secrets_never_land(platform: Platform, signer: TestSigner, org: str) -> None:
    h = signer.headers(org)
    value = f"{CANARY}-{uuid.uuid4().hex[:6]}"
    written = await platform.client.put(
        f"/api/secrets/v1/secrets/app-{uuid.uuid4().hex[:6]}/db",
        json={"data": {"dsn_password": value, "note": "x"}},
        headers=h,
    )
    assert written.status_code == 200, written.text

    async def fingerprinted() -> bool:
        async with platform.runtime.sessions() as session:
            rows = await session.execute(select(SecretFingerprint).where(SecretFingerprint.org_id == org))
            return rows.first() is not None

    await wait_until(fingerprinted, what="logging to receive the secret's fingerprints")
    app = f"app-{uuid.uuid4().hex[:8]}"
    answer = await push(
        platform, h, stream({"app": app}, f"connecting with {value} to db", ("x", {"v": value}))
    )
    assert answer["redacted"] == {"secret": 2}
    assert await lines(platform, h, f'{{app="{app}"}}', direction="forward") == [
        "connecting with [REDACTED:secret] to db",
        "x",
    ]
    # The value is a secret of this org only: another org's line keeps it (it is not theirs to hide).
    other = signer.headers(f"org-{uuid.uuid4().hex[:12]}")
    assert (await push(platform, other, stream({"app": app}, f"v {value}")))["redacted"] == {}
