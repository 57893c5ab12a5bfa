"""Redaction at ingest: what a pushed line, label or metadata value must never store.

Two passes. First the org's secret values: `secrets` publishes a keyed hash of each value it stores
(coder.shared.contracts.secrets `fingerprint`), never the value; a token of the line whose hash is
among them is replaced. Tokens are the line split at whitespace, at quotes and separators, and at URL
punctuation too, so a value is found whole however it is quoted (`password="..."`, `?key=...`,
`user:...@host`); only tokens of a length some fingerprint has are hashed. Then patterns: tokens
and keys by their shape (JWTs, bearer tokens, the platform's own `cdr_*` tokens, OpenAI/Anthropic,
AWS, GitHub, Slack, Google, Stripe keys, private key blocks), the value of a `password=`-like key,
a URL's password, and e-mail addresses (personal data).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from coder.shared.contracts.secrets import fingerprint

SECRET = "[REDACTED:secret]"  # noqa: S105 - the mark, not a secret

# (kind, pattern, group to replace (0: the whole match)).
PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    (
        "private-key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        0,
    ),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), 0),
    ("platform-token", re.compile(r"\bcdr_(?:pat|rt|inv)_[A-Za-z0-9_-]{16,}"), 0),
    ("api-key", re.compile(r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}"), 0),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), 0),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), 0),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("google-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0),
    ("stripe-key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}"), 0),
    ("bearer", re.compile(r"(?i)\b(?:bearer|basic)\s+([A-Za-z0-9._~+/-]{8,}=*)"), 1),
    (
        "credential",
        re.compile(
            r"""(?ix)
            \b(?:[a-z0-9_.-]*?(?:password|passwd|pwd|passphrase|secret|api[_-]?key|apikey|access[_-]?key
               |private[_-]?key|client[_-]?secret|auth[_-]?token|access[_-]?token|refresh[_-]?token
               |session[_-]?token|token))
            ["']?\s*[:=]\s*["']?
            ([^\s"'&,;}]+)"""
        ),
        1,
    ),
    ("url-password", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:([^\s/@]+)@", re.I), 1),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), 0),
]

# Lower-case substrings one of which every match of a pattern contains.
NEEDLES: dict[str, tuple[str, ...]] = {
    "private-key": ("private key",),
    "jwt": ("eyj",),
    "platform-token": ("cdr_",),
    "api-key": ("sk-",),
    "aws-key": ("akia", "asia", "agpa", "aida", "aroa"),
    "github-token": ("gh", "github_pat_"),
    "slack-token": ("xox",),
    "google-key": ("aiza",),
    "stripe-key": ("_live_", "_test_"),
    "bearer": ("bearer", "basic"),
    "credential": ("pass", "pwd", "secret", "key", "token"),
    "url-password": ("://",),
    "email": ("@",),
}

# Token shapes a secret value is looked for as: whitespace-separated, then split at quotes and
# separators, then at URL punctuation too.
_TOKENIZERS = [
    re.compile(r"\S+"),
    re.compile(r"[^\s\"'`,;=&()\[\]{}<>|]+"),
    re.compile(r"[^\s\"'`,;=&()\[\]{}<>|:/@?#]+"),
]


@dataclass
class Fingerprints:
    """One org's secret fingerprints, as ingest checks tokens against them."""

    org_id: str
    digests: set[bytes] = field(default_factory=set)
    lengths: set[int] = field(default_factory=set)


@dataclass
class Redactor:
    secrets: Fingerprints
    # What was redacted in this push, by kind: the push's answer reports it (never the values).
    counts: dict[str, int] = field(default_factory=dict)

    def _count(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def _secret_spans(self, text: str) -> list[tuple[int, int]]:
        if not self.secrets.digests:
            return []
        spans = set()
        for tokenizer in _TOKENIZERS:
            for match in tokenizer.finditer(text):
                token = match.group()
                if len(token) in self.secrets.lengths and (
                    fingerprint(self.secrets.org_id, token) in self.secrets.digests
                ):
                    spans.add(match.span())
        return _merged(spans)

    def redact(self, text: str) -> str:
        spans = self._secret_spans(text)
        if spans:
            self._count("secret", len(spans))
            text = _replaced(text, spans, SECRET)
        folded = text.lower()
        for kind, pattern, group in PATTERNS:
            # A pattern runs only on text holding its literal part: most lines hold none.
            if not any(needle in folded for needle in NEEDLES[kind]):
                continue
            text, n = _substitute(pattern, group, f"[REDACTED:{kind}]", text)
            self._count(kind, n)
            folded = text.lower()
        return text


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _replaced(text: str, spans: list[tuple[int, int]], mark: str) -> str:
    parts, at = [], 0
    for start, end in spans:
        parts.append(text[at:start])
        parts.append(mark)
        at = end
    parts.append(text[at:])
    return "".join(parts)


def _substitute(pattern: re.Pattern[str], group: int, mark: str, text: str) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if mark in match.group(0) or match.group(group).startswith("[REDACTED"):
            return match.group(0)  # already redacted by an earlier pass
        count += 1
        start, end = match.span(group)
        whole = match.group(0)
        offset = match.start()
        return whole[: start - offset] + mark + whole[end - offset :]

    return pattern.sub(replace, text), count
