"""Source files out of an uploaded archive (tar, gzip/bzip2/xz-compressed or not, or zip), within limits:
no member outside the tree, no links or devices, bounded sizes whatever the headers claim."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from typing import IO

from coder.services.quality.engine import Source, check_path
from coder.services.quality.schemas import MAX_FILE_CHARS, MAX_FILES, MAX_TOTAL_BYTES
from coder.shared.errors import InvalidField

FIELD = "archive"


class Skipped(Exception):
    pass


def _read(stream: IO[bytes], name: str, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InvalidField(FIELD, f"{name} is larger than {limit} bytes")
    return data


def _members(data: bytes) -> Iterator[tuple[str, IO[bytes] | None]]:
    """(name, stream or None when it is not a regular file) of each member."""
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise InvalidField(FIELD, f"not a readable zip archive: {exc}") from None
        with archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                # Unix mode in the high bits: a symbolic link is skipped like tar's.
                mode = (info.external_attr >> 16) & 0o170000
                if mode not in (0, 0o100000):
                    yield info.filename, None
                    continue
                with archive.open(info) as stream:
                    yield info.filename, stream
        return
    try:
        archive_tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidField(FIELD, f"not a readable tar or zip archive: {exc}") from None
    with archive_tar:
        try:
            for member in archive_tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    yield member.name, None
                    continue
                yield member.name, archive_tar.extractfile(member)
        except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise InvalidField(FIELD, f"the archive is damaged: {exc}") from None


def sources(data: bytes) -> tuple[list[Source], list[str]]:
    """The archive's text files (UTF-8) as sources, and the members skipped (binary, links, empty
    paths). Limits: MAX_FILES text files, MAX_FILE_CHARS bytes each, MAX_TOTAL_BYTES in all."""
    out: list[Source] = []
    skipped: list[str] = []
    total = 0
    seen: set[str] = set()
    for raw_name, stream in _members(data):
        name = raw_name.removeprefix("./")
        why = check_path(name)
        if why is not None:
            raise InvalidField(FIELD, f"member {raw_name[:200]!r} {why}")
        if stream is None:
            skipped.append(name)
            continue
        try:
            content = _read(stream, name, MAX_FILE_CHARS)
        except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise InvalidField(FIELD, f"member {name!r} cannot be read: {exc}") from None
        total += len(content)
        if total > MAX_TOTAL_BYTES:
            raise InvalidField(FIELD, f"the files hold more than {MAX_TOTAL_BYTES} bytes")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(name)
            continue
        if "\x00" in text or name in seen:
            skipped.append(name)
            continue
        seen.add(name)
        out.append(Source(name, text))
        if len(out) > MAX_FILES:
            raise InvalidField(FIELD, f"more than {MAX_FILES} files")
    if not out:
        raise InvalidField(FIELD, "the archive holds no text file")
    return out, skipped
