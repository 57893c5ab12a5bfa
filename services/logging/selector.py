"""LogQL's log-query subset: a stream selector and line filters, parsed into SQL conditions.

`{app="api", env=~"prod|stage"} |= "timeout" != "healthz" |~ "status=5\\d\\d"`: label matchers
`=`, `!=`, `=~`, `!~` (regexes fully anchored, as in Loki; a missing label matches ""), and line
filters `|=` contains, `!=` does not contain, `|~` matches, `!~` does not match (unanchored).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, not_

from coder.services.logging.models import Line, Stream
from coder.shared.errors import InvalidField

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<brace>[{}])
    | (?P<comma>,)
    | (?P<op>\|=|\|~|!=|!~|=~|=)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    )""",
    re.VERBOSE,
)
MATCH_OPS = {"=", "!=", "=~", "!~"}
FILTER_OPS = {"|=", "!=", "|~", "!~"}


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str


@dataclass(frozen=True)
class Filter:
    op: str
    value: str


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    filters: tuple[Filter, ...]

    def stream_conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        for m in self.matchers:
            value = func.coalesce(Stream.labels[m.name].astext, "")
            if m.op == "=":
                out.append(value == m.value)
            elif m.op == "!=":
                out.append(value != m.value)
            elif m.op == "=~":
                out.append(value.regexp_match(f"^(?:{m.value})$"))
            else:
                out.append(not_(value.regexp_match(f"^(?:{m.value})$")))
        return out

    def line_conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        for f in self.filters:
            if f.op == "|=":
                out.append(Line.line.contains(f.value, autoescape=True))
            elif f.op == "!=":
                out.append(not_(Line.line.contains(f.value, autoescape=True)))
            elif f.op == "|~":
                out.append(Line.line.regexp_match(f.value))
            else:
                out.append(not_(Line.line.regexp_match(f.value)))
        return out


def _bad(field: str, message: str) -> InvalidField:
    return InvalidField(field, message)


def _unquote(token: str, field: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    try:
        value: str = json.loads(token)
    except ValueError:
        raise _bad(field, f"bad string {token}") from None
    return value


def _check_regex(value: str, field: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise _bad(field, f"invalid regular expression {value!r}: {exc}") from None


def parse(text: str, field: str = "query.query") -> LogQuery:
    """`text` as a LogQuery, or InvalidField naming `field` and what is wrong."""
    tokens: list[tuple[str, str]] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            raise _bad(
                field, f"unexpected input at offset {position}: {stripped[position : position + 20]!r}"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    if not tokens or tokens[0] != ("brace", "{"):
        raise _bad(field, 'must start with a stream selector, e.g. {app="api"}')
    i, matchers = 1, []
    while tokens[i : i + 1] != [("brace", "}")]:
        part = tokens[i : i + 3]
        if len(part) < 3 or part[0][0] != "name" or part[1][1] not in MATCH_OPS or part[2][0] != "string":
            raise _bad(field, 'a label matcher is name, one of = != =~ !~, and a "string"')
        value = _unquote(part[2][1], field)
        if part[1][1] in ("=~", "!~"):
            _check_regex(value, field)
        matchers.append(Matcher(part[0][1], part[1][1], value))
        i += 3
        if tokens[i : i + 1] == [("comma", ",")]:
            i += 1
        elif tokens[i : i + 1] != [("brace", "}")]:
            raise _bad(field, "label matchers are separated by commas and closed by }")
    i += 1
    filters = []
    while i < len(tokens):
        part = tokens[i : i + 2]
        if len(part) < 2 or part[0][1] not in FILTER_OPS or part[1][0] != "string":
            raise _bad(field, 'a line filter is one of |= != |~ !~ and a "string"')
        value = _unquote(part[1][1], field)
        if part[0][1] in ("|~", "!~"):
            _check_regex(value, field)
        filters.append(Filter(part[0][1], value))
        i += 2
    return LogQuery(tuple(matchers), tuple(filters))
