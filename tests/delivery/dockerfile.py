"""Just enough of a Dockerfile reader to replay the project's Dockerfile without a container engine.

It understands what our Dockerfile uses (ARG, FROM, ENV, WORKDIR, COPY, RUN, LABEL, USER, EXPOSE,
ENTRYPOINT, CMD, line continuations, `${VAR}`), and a .dockerignore of plain, `*` and `**`
patterns; anything else is an error, so the Dockerfile cannot outgrow what the test replays.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

KNOWN = {"ARG", "FROM", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    rest: str

    def words(self) -> list[str]:
        return shlex.split(self.rest)

    def exec_form(self) -> list[str]:
        value = json.loads(self.rest)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form: {self.rest}"
        return [str(item) for item in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def assignments(rest: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        assert sep, f"only KEY=value forms are read: {word}"
        out[key] = value
    return out


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        assert keyword in KNOWN, f"the test does not know how to replay {keyword}"
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        if keyword == "ARG" and not stages:
            global_args.update(assignments(rest))
            continue
        if keyword == "FROM":
            words = rest.split()
            base = expand(words[0], global_args)
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
            continue
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return Dockerfile(global_args, stages)


def ignore_patterns(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def ignored(relative: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not replayed"
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])  # `**/x` also matches `x` at the top
        for candidate in candidates:
            regex = re.escape(candidate).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
            if re.fullmatch(regex, relative) or fnmatch.fnmatchcase(relative, candidate):
                return True
    return False


def copy_context(context: Path, patterns: list[str], sources: list[str], destination: Path) -> None:
    """COPY <sources> <destination> from the build context, as the builder sends it (.dockerignore
    applied, symlinks kept as links)."""
    for source in sources:
        origin = (context / source).resolve() if source != "." else context
        if origin.is_file():
            target = destination / origin.name if destination.is_dir() else destination
            shutil.copy2(origin, target)
            continue
        for directory, dirs, files in os.walk(origin, followlinks=False):
            base = Path(directory)
            relative_dir = base.relative_to(context).as_posix()
            dirs[:] = [d for d in dirs if not ignored(_join(relative_dir, d), patterns)]
            for name in [*files, *(d for d in os.listdir(base) if (base / d).is_symlink() and d in dirs)]:
                relative = _join(relative_dir, name)
                if ignored(relative, patterns):
                    continue
                target = destination / Path(relative).relative_to(Path(source) if source != "." else Path())
                target.parent.mkdir(parents=True, exist_ok=True)
                if (base / name).is_symlink():
                    target.symlink_to(os.readlink(base / name))
                else:
                    shutil.copy2(base / name, target)
            # A symlink to a directory is copied as a link above, never walked into.
            dirs[:] = [d for d in dirs if not (base / d).is_symlink()]


def _join(directory: str, name: str) -> str:
    return name if directory in ("", ".") else f"{directory}/{name}"
