"""The configuration reference (docs/configuration.md), generated from the settings classes.

`coder-platform config` prints it. Each field's line is its `Field(description=...)`, else the
comments right above it (or beside it) in the class's source, so a comment is the documentation.
`tests/runner/test_configuration.py` fails when the committed file differs from what this writes.
"""

from __future__ import annotations

import inspect
import io
import json
import tempfile
import textwrap
import tokenize
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode

from coder.runner import registry
from coder.shared.settings import PlatformSettings

HEADER = """\
# Configuration reference

Generated from the settings classes by `coder-platform config > docs/configuration.md`; do not edit
by hand (`tests/runner/test_configuration.py` fails when this file is stale). Every setting is an
environment variable: lists and objects are JSON unless said otherwise; a variable left unset takes
its default. Also read: each calling target's `<TARGET>_WORKLOAD_SECRET` (see `CODER_WORKLOAD_SECRETS`),
`CODER_HOST` and `CODER_PORT` (`coder-platform run`'s `--host` and `--port`), and the standard `OTEL_*`
variables of the OpenTelemetry exporter.
"""


def reference() -> str:
    """The whole document: the platform's settings, then each target's in registry order."""
    sections = [HEADER, _section("Every process", PlatformSettings)]
    without = []
    for name in registry.PACKAGES:
        settings = registry.wiring(name).settings
        if settings is None:
            without.append(f"`{name}`")
        else:
            sections.append(_section(name, settings))
    sections.append(f"Targets without settings of their own: {', '.join(without)}.\n")
    return "\n".join(sections)


def _section(title: str, cls: type[BaseSettings]) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    lines = [f"## {title} (`{prefix}*`)", ""]
    doc = cls.__dict__.get("__doc__")
    if doc:
        lines += [" ".join(inspect.cleandoc(doc).split()), ""]
    lines += ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    comments = field_comments(cls)
    unsafe = getattr(cls, "development_defaults", {})
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        variable = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
        default = (
            "a development-only value, refused outside development" if name in unsafe else _default(field)
        )
        description = field.description or comments.get(name, "")
        description = description[:1].upper() + description[1:]
        cells = [f"`{variable}`", _type(field), default, description]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a table cell: `|` escaped, and `<` outside code spans, so `<target>` is no HTML tag."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;") for i, part in enumerate(parts))


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines right above its declaration, joined; else the comment beside it
    (lint directives, `# noqa...`, are not documentation)."""
    source = textwrap.dedent(inspect.getsource(cls))
    above: list[str] = []  # comment-only lines since the last statement
    pending: str | None = None  # the field being declared, until its line ends
    comments: dict[str, str] = {}
    depth = 0
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        if tok.type in (tokenize.INDENT, tokenize.DEDENT):
            depth += 1 if tok.type == tokenize.INDENT else -1
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if text.startswith("noqa"):
                continue
            if tok.line.lstrip().startswith("#"):
                above.append(text)
            elif pending is not None and pending not in comments:
                comments[pending] = text
        elif tok.type == tokenize.NL and not tok.line.strip():
            above = []  # a blank line ends a comment block
        elif tok.type == tokenize.NAME and depth == 1 and tokens[i + 1].string == ":" and tok.start[1] == 4:
            pending = tok.string
            if above:
                comments[pending] = " ".join(above)
            above = []
        elif tok.type == tokenize.NEWLINE:
            pending, above = None, []
    return comments


def _type(field: FieldInfo) -> str:
    text = _annotation(field.annotation)
    if any(isinstance(m, NoDecode) or m is NoDecode for m in field.metadata):
        text = text.replace("JSON list", "comma-separated list")
    bounds = {
        annotated_types.Ge: "≥",
        annotated_types.Gt: ">",
        annotated_types.Le: "≤",
        annotated_types.Lt: "<",
    }
    limits = [
        f"{symbol} {_number(getattr(m, kind.__name__.lower()))}"
        for m in field.metadata
        for kind, symbol in bounds.items()
        if isinstance(m, kind)
    ]
    return ", ".join([text, *limits])


def _annotation(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation(a) for a in args if a is not type(None))
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    if origin is list:
        return f"JSON list of {_annotation(args[0])}"
    if origin is dict:
        return f"JSON object of {_annotation(args[1])}"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        # A temporary directory is the machine's: named, not spelled out.
        temp = Path(tempfile.gettempdir())
        value = f"<temp dir>/{value.relative_to(temp)}" if value.is_relative_to(temp) else str(value)
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"`{_number(value)}`"
    return f"`{json.dumps(value)}`"


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
