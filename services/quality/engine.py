"""The analysis of one set of source files, with no database: ruff's lint findings (its binary, run as a
subprocess on a temporary directory), radon's cyclomatic complexity per function, and duplicated blocks
found by hashing windows of normalized lines (SonarQube's CPD does the same with tokens)."""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from radon.complexity import cc_visit
from radon.visitors import Function
from ruff.__main__ import find_ruff_bin

log = logging.getLogger(__name__)

# The rules ruff checks: pycodestyle errors and warnings, pyflakes, bugbear, pyupgrade, simplify.
RUFF_RULES = "E,W,F,B,UP,SIM"
RUFF_TIMEOUT_SECONDS = 120.0
# A function over this cyclomatic complexity is an issue (SonarQube's python:S3776 threshold is 15;
# radon's grade C starts at 11).
COMPLEXITY_THRESHOLD = 10
# A duplicated block is at least this many significant lines (SonarQube's CPD: 10 lines).
DUPLICATION_WINDOW = 10
PYTHON_SUFFIXES = (".py", ".pyi")
SEVERITIES = ("blocker", "critical", "major", "minor", "info")


class AnalysisFailed(Exception):
    """The analyzer itself failed (not the code it was given)."""


@dataclass(frozen=True)
class Source:
    path: str
    text: str


@dataclass
class Finding:
    rule: str
    severity: str
    path: str
    line: int
    column: int
    message: str


@dataclass
class FileResult:
    path: str
    lines: int
    ncloc: int
    line_hashes: list[str]
    functions: int = 0
    complexity: int = 0
    duplicated_lines: list[int] = field(default_factory=list)
    duplicated_blocks: int = 0


@dataclass
class Result:
    files: list[FileResult]
    findings: list[Finding]


def check_path(path: str) -> str | None:
    """Why `path` cannot name a file of an analysis, or None: relative, POSIX, no `..`."""
    if len(path) > 500:
        return "must be at most 500 characters"
    if not path or path.startswith("/") or "\\" in path:
        return "must be a relative path with forward slashes"
    parts = PurePosixPath(path).parts
    if any(part in ("..", ".") for part in path.split("/")) or not parts:
        return "must not contain '.' or '..' segments"
    if any(ord(c) < 32 for c in path):
        return "must not contain control characters"
    return None


def line_hash(line: str) -> str:
    return hashlib.blake2b(line.rstrip().encode(), digest_size=6).hexdigest()


def _comment(line: str, path: str) -> bool:
    stripped = line.strip()
    if path.endswith(PYTHON_SUFFIXES) or path.endswith((".sh", ".yaml", ".yml", ".toml", ".rb")):
        return stripped.startswith("#")
    return stripped.startswith(("//", "/*", "*", "#"))


def _significant(source: Source) -> list[tuple[int, str]]:
    """(line number, normalized text) of each line that is code: blank and comment lines left out."""
    out = []
    for number, line in enumerate(source.text.splitlines(), start=1):
        if line.strip() and not _comment(line, source.path):
            out.append((number, " ".join(line.split())))
    return out


# --- severities ---


def ruff_severity(code: str | None) -> str:
    """SonarQube's severity for a ruff rule: what breaks the program first."""
    if code is None or code in ("invalid-syntax", "E999") or code.startswith("E9"):
        return "blocker"
    if code in ("F821", "F822", "F823", "F811", "F841") or code.startswith(("F63", "F7", "B0")):
        return "critical"
    if code.startswith(("F", "B", "C9")):
        return "major"
    if code.startswith(("E", "W", "UP", "SIM")):
        return "minor"
    return "info"


# --- ruff ---


async def lint(sources: Sequence[Source]) -> list[Finding]:
    """ruff's findings on the Python files, run as `ruff check` on a temporary copy of them. `--isolated`:
    no configuration file among the submitted ones changes what is checked."""
    python = [s for s in sources if s.path.endswith(PYTHON_SUFFIXES)]
    if not python:
        return []
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        root = Path(tmp)
        for source in python:
            target = root / source.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source.text, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            find_ruff_bin(),
            "check",
            "--isolated",
            "--no-cache",
            "--exit-zero",
            "--output-format",
            "json",
            "--select",
            RUFF_RULES,
            ".",
            cwd=root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), RUFF_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AnalysisFailed(f"ruff took more than {RUFF_TIMEOUT_SECONDS:.0f} s") from None
        if process.returncode != 0:
            raise AnalysisFailed(
                f"ruff exited with {process.returncode}: {err.decode(errors='replace')[:500]}"
            )
        return [_finding(item, root) for item in json.loads(out or b"[]")]


def _finding(item: dict, root: Path) -> Finding:
    code = item.get("code")
    path = Path(item["filename"])
    relative = path.relative_to(root) if path.is_absolute() else path
    location = item.get("location") or {}
    return Finding(
        rule=f"ruff:{code or 'invalid-syntax'}",
        severity=ruff_severity(code),
        path=relative.as_posix(),
        line=max(1, int(location.get("row") or 1)),
        column=max(1, int(location.get("column") or 1)),
        message=str(item.get("message", ""))[:2000],
    )


# --- complexity ---


def complexity(source: Source) -> tuple[int, int, list[Finding]]:
    """(functions, total cyclomatic complexity, findings for functions over the threshold) of a Python
    file, by radon; a file that does not parse has none (ruff reports its syntax error)."""
    try:
        blocks = cc_visit(source.text)
    except (SyntaxError, ValueError):
        return 0, 0, []
    functions = [block for block in blocks if isinstance(block, Function)]
    findings = [
        Finding(
            rule="radon:cyclomatic-complexity",
            severity="critical" if f.complexity > 2 * COMPLEXITY_THRESHOLD else "major",
            path=source.path,
            line=f.lineno,
            column=f.col_offset + 1,
            message=(
                f"{f.fullname} has a cyclomatic complexity of {f.complexity} "
                f"(more than {COMPLEXITY_THRESHOLD})"
            ),
        )
        for f in functions
        if f.complexity > COMPLEXITY_THRESHOLD
    ]
    return len(functions), sum(f.complexity for f in functions), findings


# --- duplication ---


def duplications(
    sources: Sequence[Source], window: int = DUPLICATION_WINDOW
) -> dict[str, tuple[set[int], int]]:
    """Per path: the duplicated physical lines and the number of duplicated blocks. A window of `window`
    consecutive significant lines (whitespace normalized) seen twice or more, in one file or across
    files, makes every line it spans duplicated; overlapping windows of one file merge into one block."""
    significant = {s.path: _significant(s) for s in sources}
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for path, lines in significant.items():
        for start in range(len(lines) - window + 1):
            digest = hashlib.blake2b(
                "\n".join(text for _, text in lines[start : start + window]).encode(), digest_size=16
            ).hexdigest()
            seen[digest].append((path, start))
    windows: dict[str, set[int]] = defaultdict(set)  # path -> starting indexes of duplicated windows
    for places in seen.values():
        if len(places) > 1:
            for path, start in places:
                windows[path].add(start)
    out: dict[str, tuple[set[int], int]] = {}
    for path, starts in windows.items():
        lines = significant[path]
        duplicated: set[int] = set()
        blocks, last_end = 0, -1
        for start in sorted(starts):
            end = start + window - 1
            if start > last_end:
                blocks += 1
            last_end = max(last_end, end)
            duplicated.update(range(lines[start][0], lines[end][0] + 1))
        out[path] = (duplicated, blocks)
    return out


# --- new code ---


def new_lines(current: Sequence[str], baseline: Sequence[str] | None) -> list[int]:
    """The line numbers (from 1) of `current` that are new against `baseline` (line hashes of the same
    file there, None when the file is not in it: every line is new)."""
    if baseline is None:
        return list(range(1, len(current) + 1))
    matcher = difflib.SequenceMatcher(None, baseline, current, autojunk=False)
    out: list[int] = []
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            out.extend(range(j1 + 1, j2 + 1))
    return out


# --- the whole ---


def _measure(source: Source) -> FileResult:
    lines = source.text.splitlines()
    return FileResult(
        path=source.path,
        lines=len(lines),
        ncloc=len(_significant(source)),
        line_hashes=[line_hash(line) for line in lines],
    )


def _static(sources: Sequence[Source]) -> tuple[list[FileResult], list[Finding]]:
    files, findings = [], []
    dupes = duplications(sources)
    for source in sources:
        result = _measure(source)
        if source.path.endswith(PYTHON_SUFFIXES):
            result.functions, result.complexity, complex_ones = complexity(source)
            findings.extend(complex_ones)
        duplicated, blocks = dupes.get(source.path, (set(), 0))
        result.duplicated_lines, result.duplicated_blocks = sorted(duplicated), blocks
        files.append(result)
    return files, findings


async def analyze(sources: Sequence[Source]) -> Result:
    """Lint, complexity and duplication of `sources` (paths checked and unique beforehand)."""
    lint_task = asyncio.create_task(lint(sources))
    try:
        files, findings = await asyncio.to_thread(_static, sources)
    except BaseException:
        lint_task.cancel()
        raise
    findings = [*await lint_task, *findings]
    known = {f.path for f in files}
    return Result(files=files, findings=[f for f in findings if f.path in known])


def by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts
