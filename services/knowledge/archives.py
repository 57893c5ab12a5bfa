"""Reading a repository uploaded as an archive (tar.gz or zip), refusing what could hurt: paths that
climb out (`..`, absolute paths, drive letters), links and devices, more files or more bytes than the
limits (read as the archive is unpacked, never trusting its own headers, so a zip bomb stops at the
limit), and files that are not text (skipped, not indexed)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from coder.shared.errors import InvalidField, Problem

FIELD = "body"
# Directories no one searches for code.
SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", "dist", "build"}


class TooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Payload too large"


@dataclass(frozen=True)
class Limits:
    archive_bytes: int
    unpacked_bytes: int
    files: int
    file_bytes: int


def safe_path(name: str, field: str) -> str | None:
    """`name` as a relative POSIX path inside the archive, None for a directory or skipped one, or a
    422 naming `field` for a path that would leave it."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":") or "\x00" in cleaned:
        raise InvalidField(field, f"{name!r}: absolute paths are refused")
    parts = [p for p in PurePosixPath(cleaned).parts if p not in ("", ".")]
    if ".." in parts:
        raise InvalidField(field, f"{name!r}: paths may not climb out with '..'")
    if not parts or cleaned.endswith("/"):
        return None
    if any(p in SKIPPED_DIRS for p in parts[:-1]):
        return None
    path = "/".join(parts)
    if len(path) > 1000:
        raise InvalidField(field, f"{name[:80]!r}...: paths are at most 1000 characters")
    return path


def _read(stream: IO[bytes], limits: Limits, budget: list[int], name: str) -> bytes | None:
    """The member's bytes, read at most one past the per-file limit; None if it is over it."""
    data = stream.read(limits.file_bytes + 1)
    budget[0] -= len(data)
    if budget[0] < 0:
        raise TooLarge(f"{FIELD}: the archive unpacks to more than {limits.unpacked_bytes} bytes")
    if len(data) > limits.file_bytes:
        return None  # too large to be a source file worth indexing: skipped
    return data


def _text(data: bytes) -> str | None:
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def files(data: bytes, limits: Limits) -> Iterator[tuple[str, str]]:
    """(path, text) of each text file of a tar(.gz) or zip archive, checked against `limits`."""
    if len(data) > limits.archive_bytes:
        raise TooLarge(f"{FIELD}: the archive is larger than {limits.archive_bytes} bytes")
    budget = [limits.unpacked_bytes]
    count = 0
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            infos = archive.infolist()
        except (zipfile.BadZipFile, ValueError) as exc:
            raise InvalidField(FIELD, f"not a readable zip archive: {exc}") from None
        for info in infos:
            path = safe_path(info.filename, FIELD)
            if path is None or info.is_dir():
                continue
            count += 1
            if count > limits.files:
                raise TooLarge(f"{FIELD}: the archive holds more than {limits.files} files")
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:  # a symbolic link
                continue
            try:
                with archive.open(info) as stream:
                    content = _read(stream, limits, budget, path)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                raise InvalidField(FIELD, f"{path}: cannot be unpacked: {exc}") from None
            text = _text(content) if content is not None else None
            if text is not None:
                yield path, text
        return
    try:
        archive_tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidField(FIELD, f"not a readable tar.gz or zip archive: {exc}") from None
    with archive_tar:
        try:
            for member in archive_tar:
                path = safe_path(member.name, FIELD)
                if path is None or not member.isfile():  # links, devices and directories are skipped
                    continue
                count += 1
                if count > limits.files:
                    raise TooLarge(f"{FIELD}: the archive holds more than {limits.files} files")
                member_stream = archive_tar.extractfile(member)
                if member_stream is None:
                    continue
                content = _read(member_stream, limits, budget, path)
                text = _text(content) if content is not None else None
                if text is not None:
                    yield path, text
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidField(FIELD, f"the archive is damaged: {exc}") from None
