"""Events notes publishes. A real target declares them in `shared/contracts/<target>.py`, where its
consumers import them from; nothing consumes this throwaway's, so they stay in its package."""

from __future__ import annotations

from typing import ClassVar

from coder.shared.contracts import Contract


class NoteCreated(Contract):
    """A note was created in an org."""

    event_type: ClassVar[str] = "notes.note.created"
    schema_version: ClassVar[int] = 1

    title: str
