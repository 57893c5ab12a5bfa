"""Reports from CI: JUnit XML test results, Cobertura (and coverage.py's, which is Cobertura) coverage.

Parsed with defusedxml: no DTD, no entity expansion, no external references. Malformed or unexpected
XML is an `InvalidField` naming the request field it came in."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from coder.shared.errors import InvalidField

# A summary keeps the names of at most this many failing test cases.
MAX_FAILURES_KEPT = 50


def parse_xml(text: str, field_name: str) -> Element:
    try:
        return fromstring(text.encode("utf-8"), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InvalidField(field_name, f"refused XML: {type(exc).__name__}") from None
    except ParseError as exc:
        raise InvalidField(field_name, f"not well-formed XML: {exc}") from None


def _number(value: str | None, field_name: str, what: str) -> float:
    try:
        number = float(value or 0)
    except ValueError:
        raise InvalidField(field_name, f"{what} is not a number: {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        raise InvalidField(field_name, f"{what} is not a finite non-negative number: {value!r}")
    return number


# --- JUnit ---


def junit(text: str, field_name: str = "junit") -> dict[str, Any]:
    """Counts of a JUnit XML report (`<testsuites>` or one `<testsuite>`): tests, failures, errors,
    skipped, the time in ms, and the first failing cases by name."""
    root = parse_xml(text, field_name)
    if root.tag not in ("testsuites", "testsuite"):
        raise InvalidField(
            field_name, f"a JUnit report's root is <testsuites> or <testsuite>, not <{root.tag}>"
        )
    tests = failures = errors = skipped = 0
    seconds = 0.0
    failing: list[dict[str, str]] = []
    for case in root.iter("testcase"):
        tests += 1
        seconds += _number(case.get("time"), field_name, f"time of test case {case.get('name')!r}")
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome == "failure":
            failures += 1
        elif outcome == "error":
            errors += 1
        elif outcome == "skipped":
            skipped += 1
        if outcome in ("failure", "error") and len(failing) < MAX_FAILURES_KEPT:
            name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
            failing.append({"name": name[:500], "outcome": outcome})
    return {
        "tests": tests,
        "failures": failures,
        "errors": errors,
        "skipped": skipped,
        "time_ms": round(seconds * 1000),
        "failing": failing,
    }


# --- coverage ---


@dataclass
class Coverage:
    """Per reported file name (as the report spells it): the lines it names as hit, and not."""

    covered: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    uncovered: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    sources: list[str] = field(default_factory=list)

    def files(self) -> set[str]:
        return set(self.covered) | set(self.uncovered)


def cobertura(text: str, field_name: str = "report") -> Coverage:
    """Line hits of a Cobertura report (coverage.py's `coverage xml` writes one): each
    `<class filename=...>`'s `<line number= hits=>`. A line hit in one class and not in another of the
    same file counts as hit."""
    root = parse_xml(text, field_name)
    if root.tag != "coverage":
        raise InvalidField(field_name, f"a Cobertura report's root is <coverage>, not <{root.tag}>")
    out = Coverage(sources=[(s.text or "").strip() for s in root.iter("source") if (s.text or "").strip()])
    for klass in root.iter("class"):
        filename = klass.get("filename")
        if not filename:
            raise InvalidField(field_name, "a <class> has no filename")
        name = posixpath.normpath(filename.replace("\\", "/"))
        for line in klass.iter("line"):
            number = _number(line.get("number"), field_name, f"a line number of {filename}")
            hits = _number(line.get("hits"), field_name, f"the hits of {filename}:{line.get('number')}")
            if number < 1 or number != int(number) or number > 10_000_000:
                raise InvalidField(field_name, f"{filename}: line number {line.get('number')!r} is invalid")
            (out.covered if hits > 0 else out.uncovered)[name].add(int(number))
    for name, lines in out.covered.items():
        out.uncovered[name] -= lines
    return out


def match_paths(reported: Iterable[str], sources: list[str], paths: set[str]) -> dict[str, str]:
    """Reported file name -> the analysis's path it is: the same path, a `<source>` joined with it and
    made relative to a path of the analysis, or the one path ending with `/<name>`."""
    out: dict[str, str] = {}
    for name in reported:
        candidates = [name.lstrip("/")]
        for source in sources:
            joined = posixpath.normpath(posixpath.join(source.replace("\\", "/"), name)).lstrip("/")
            candidates.append(joined)
        found = next((c for c in candidates if c in paths), None)
        if found is None:
            suffixes = {p for p in paths for c in candidates if p.endswith("/" + c) or c.endswith("/" + p)}
            if len(suffixes) == 1:
                found = suffixes.pop()
        if found is not None:
            out[name] = found
    return out
