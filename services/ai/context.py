"""Context assembly: what a model should see for a query, within a token budget, with citations.

Items come from the client (open files, the selection, diagnostics) and from pluggable sources
(`SOURCES`: `knowledge`, whose search is called over HTTP with the caller's own token). Items are taken by
priority (selection, diagnostics, sources' results, open files), each cut to what is left of the
budget. An item or source marked private never goes to a model at an external provider: for such a
destination it is left out, and the answer says so."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx
from pydantic import BaseModel, Field

from coder.services.ai.providers import estimate_tokens
from coder.shared.auth import Principal
from coder.shared.http import ServiceClients
from coder.shared.schemas import Input

log = logging.getLogger(__name__)


class ItemKind(StrEnum):
    SELECTION = "selection"
    DIAGNOSTIC = "diagnostic"
    FILE = "file"
    TEXT = "text"


PRIORITY = {ItemKind.SELECTION: 0, ItemKind.DIAGNOSTIC: 1, ItemKind.TEXT: 2, ItemKind.FILE: 3}


class ContextItem(Input):
    kind: ItemKind
    content: str = Field(max_length=2_000_000)
    path: str | None = Field(default=None, max_length=1000, description="Where it comes from (a file path)")
    start_line: int | None = Field(default=None, ge=1, le=10_000_000)
    end_line: int | None = Field(default=None, ge=1, le=10_000_000)
    private: bool = Field(default=False, description="Never sent to a model at an external provider")


class ContextQuery(Input):
    query: str = Field(default="", max_length=20_000)
    items: list[ContextItem] = Field(default_factory=list, max_length=200)
    sources: list[str] = Field(default_factory=list, max_length=20, description="Names from /v1/config")
    max_tokens: int = Field(default=4000, ge=1, le=1_000_000)
    external: bool = Field(
        default=True, description="Whether the context is for a model at an external provider"
    )


class Citation(BaseModel):
    index: int = Field(description="The [n] the assembled text refers to it by")
    source: str
    path: str | None
    start_line: int | None
    end_line: int | None


class ContextPiece(BaseModel):
    citation: Citation
    content: str
    tokens: int
    truncated: bool


class ContextRead(BaseModel):
    pieces: list[ContextPiece]
    tokens: int
    left_out: list[str] = Field(description="Why items were left out (private, over budget)")


@dataclass(frozen=True)
class Found:
    """One result of a source."""

    content: str
    path: str | None = None
    start_line: int | None = None
    end_line: int | None = None
    private: bool = False  # never for a model at an external provider


class SourceFailed(Exception):
    """A source could not answer; the context goes on without it and says why."""


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    private: bool
    search: Callable[[ServiceClients, str, int], Awaitable[Sequence[Found]]]


KNOWLEDGE_HITS = 8


async def _knowledge(clients: ServiceClients, query: str, max_tokens: int) -> Sequence[Found]:
    """knowledge's hybrid search, called with the caller's own token (their collections, their teams);
    hits from a private collection come back marked private."""
    if not query.strip():
        return []
    try:
        response = await clients.client("knowledge").post(
            "/v1/search", json={"query": query[:2000], "k": KNOWLEDGE_HITS}
        )
    except (httpx.HTTPError, KeyError) as exc:
        raise SourceFailed(f"unreachable ({exc.__class__.__name__})") from None
    if response.status_code != 200:
        raise SourceFailed(f"answered {response.status_code}")
    found = []
    for hit in response.json().get("data", []):
        cited = hit["citation"]
        where = cited["path"] + (f" # {cited['heading']}" if cited.get("heading") else "")
        found.append(
            Found(
                content=hit["snippet"],
                path=f"{cited['collection']}/{where}@r{cited['revision']}",
                start_line=cited.get("start_line"),
                end_line=cited.get("end_line"),
                private=bool(hit.get("private", True)),
            )
        )
    return found


# Context sources by name.
SOURCES: dict[str, Source] = {
    "knowledge": Source(
        name="knowledge",
        description="Cited snippets from the organization's documents and code (knowledge search)",
        private=False,
        search=_knowledge,
    ),
}


def _cut(text: str, tokens: int) -> str:
    return text[: tokens * 4]


async def assemble(principal: Principal, query: ContextQuery, clients: ServiceClients) -> ContextRead:
    left_out: list[str] = []
    candidates: list[tuple[int, str, ContextItem | Found, bool]] = []
    for index, item in enumerate(query.items):
        candidates.append((PRIORITY[item.kind], f"client:{item.kind.value}", item, item.private))
        if item.private and query.external:
            left_out.append(f"items.{index}: private, and the model is at an external provider")
    for name in query.sources:
        source = SOURCES.get(name)
        if source is None:
            left_out.append(f"source {name!r}: unknown")
            continue
        if source.private and query.external:
            left_out.append(f"source {name!r}: private, and the model is at an external provider")
            continue
        try:
            results = await source.search(clients, query.query, query.max_tokens)
        except SourceFailed as exc:
            log.warning("context source failed", extra={"source": name, "error": str(exc)})
            left_out.append(f"source {name!r}: {exc}")
            continue
        for found in results:
            private = source.private or found.private
            if private and query.external:
                left_out.append(
                    f"{name} {found.path or ''}".strip()
                    + ": private, and the model is at an external provider"
                )
            candidates.append((PRIORITY[ItemKind.TEXT], name, found, private))
    candidates.sort(key=lambda c: c[0])
    pieces: list[ContextPiece] = []
    budget = query.max_tokens
    for _, source_name, entry, private in candidates:
        if private and query.external:
            continue
        if budget <= 0:
            left_out.append(f"{source_name} {entry.path or ''}".strip() + ": over the token budget")
            continue
        tokens = estimate_tokens(entry.content)
        content, truncated = entry.content, False
        if tokens > budget:
            content, tokens, truncated = _cut(entry.content, budget), budget, True
        budget -= tokens
        citation = Citation(
            index=len(pieces) + 1,
            source=source_name,
            path=entry.path,
            start_line=entry.start_line,
            end_line=entry.end_line,
        )
        pieces.append(ContextPiece(citation=citation, content=content, tokens=tokens, truncated=truncated))
    return ContextRead(pieces=pieces, tokens=query.max_tokens - budget, left_out=left_out)


def as_system_message(context: ContextRead) -> str:
    """The assembled context as a system prompt, each piece numbered for citation."""
    lines = ["Context (cite as [n]):"]
    for piece in context.pieces:
        c = piece.citation
        where = c.path or c.source
        if c.start_line is not None:
            where += f":{c.start_line}" + (f"-{c.end_line}" if c.end_line else "")
        lines.append(f"[{c.index}] {where}\n{piece.content}")
    return "\n\n".join(lines)
