"""Cutting documents into the pieces search finds and cites.

Markdown splits at its headings (ATX `#`, outside fenced code), each piece citing its heading path
("Install > Linux"). Code splits at its top-level definitions, parsed with tree-sitter (grammars from
`tree-sitter-language-pack`, shipped in the wheel): a function or class is one piece, the lines
between definitions (imports, constants) gather into pieces of their own, each citing its line range.
A file in a language without a grammar here splits into windows of lines. A piece longer than
`MAX_CHARS` is cut at line boundaries, so every piece fits an embedding model and a snippet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Parser

MAX_CHARS = 1500
WINDOW_LINES = 40

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
# File suffix -> tree-sitter language name.
LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".scala": "scala",
    ".sh": "bash",
}
# Top-level nodes that are not definitions: gathered with their neighbours rather than cut alone.
_GLUE = {"comment", "import_statement", "import_from_statement", "expression_statement", "package_clause"}


@dataclass(frozen=True)
class Piece:
    heading: str  # the heading path for Markdown, the file path (and definition name) for code
    start_line: int  # 1-based, inclusive
    end_line: int
    text: str


def language_of(path: str) -> str | None:
    """ "markdown", a tree-sitter language name, or None (plain text)."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    return LANGUAGES.get(suffix)


def chunk(path: str, content: str, *, markdown: bool = False) -> list[Piece]:
    """The pieces of a document: Markdown when `markdown` or its path says so, else code."""
    language = "markdown" if markdown else language_of(path)
    if language == "markdown":
        return markdown_pieces(content)
    if language is not None:
        parser = _parser(language)
        if parser is not None:
            return code_pieces(path, content, parser)
    return _windows(path, content.splitlines(), 1)


# --- Markdown ---

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def markdown_pieces(content: str) -> list[Piece]:
    lines = content.splitlines()
    pieces: list[Piece] = []
    path: list[tuple[int, str]] = []  # (level, title) of the headings above
    start, fence = 0, None

    def close(end: int) -> None:
        body = lines[start:end]
        if any(line.strip() for line in body):
            heading = " > ".join(title for _, title in path)
            pieces.extend(_split(heading, body, start + 1))

    for i, line in enumerate(lines):
        fenced = _FENCE.match(line)
        if fenced:
            fence = None if fence == fenced.group(1) else fence or fenced.group(1)
            continue
        match = None if fence else _HEADING.match(line)
        if match is None:
            continue
        close(i)
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2).strip())]
        start = i
    close(len(lines))
    return pieces


def _split(heading: str, lines: list[str], first: int) -> list[Piece]:
    """`lines` (starting at line `first`) as pieces of at most MAX_CHARS, cut at line boundaries."""
    pieces: list[Piece] = []
    taken: list[str] = []
    size, start = 0, first
    for offset, line in enumerate(lines):
        if taken and size + len(line) + 1 > MAX_CHARS:
            pieces.append(Piece(heading, start, start + len(taken) - 1, "\n".join(taken)))
            taken, size, start = [], 0, first + offset
        taken.append(line[: MAX_CHARS * 4])
        size += len(line) + 1
    if any(line.strip() for line in taken):
        pieces.append(Piece(heading, start, start + len(taken) - 1, "\n".join(taken)))
    return [p for p in pieces if p.text.strip()]


# --- code ---


@lru_cache(maxsize=64)
def _parser(language: str) -> Parser | None:
    from tree_sitter_language_pack import get_parser

    try:
        return get_parser(language)  # type: ignore[arg-type]
    except (LookupError, ValueError):
        return None


def code_pieces(path: str, content: str, parser: Parser) -> list[Piece]:
    lines = content.splitlines()
    tree = parser.parse(content.encode())
    pieces: list[Piece] = []
    glue_start: int | None = None  # first line (0-based) of pending non-definition lines
    covered = 0  # lines before this one belong to a piece already

    def flush(end: int) -> None:
        nonlocal glue_start
        if glue_start is not None and end > glue_start:
            pieces.extend(_windows(path, lines[glue_start:end], glue_start + 1))
        glue_start = None

    for node in tree.root_node.children:
        first, last = node.start_point[0], node.end_point[0]
        if first < covered:
            continue
        if node.type in _GLUE or not node.is_named or last - first < 1:
            glue_start = covered if glue_start is None else glue_start
            continue
        flush(first)
        name = _name(node)
        heading = f"{path} > {name}" if name else path
        pieces.extend(_split(heading, lines[first : last + 1], first + 1))
        covered = last + 1
    if glue_start is None and covered < len(lines):
        glue_start = covered
    flush(len(lines))
    return pieces


def _name(node: object) -> str | None:
    field = getattr(node, "child_by_field_name", None)
    if field is None:
        return None
    named = field("name")
    if named is None:
        for child in getattr(node, "named_children", []):  # decorated or exported definitions
            inner = getattr(child, "child_by_field_name", None)
            found = inner("name") if inner else None
            if found is not None:
                return str(found.text.decode())
        return None
    return str(named.text.decode())


def _windows(path: str, lines: list[str], first: int) -> list[Piece]:
    pieces: list[Piece] = []
    for i in range(0, len(lines), WINDOW_LINES):
        window = lines[i : i + WINDOW_LINES]
        if any(line.strip() for line in window):
            pieces.extend(_split(path, window, first + i))
    return pieces
