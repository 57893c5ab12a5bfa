"""HTTP routes of `notes`. Paths are relative to `/api/notes` at the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from coder.shared.auth import Principal, require
from coder.shared.db import SessionDep
from coder.shared.pagination import Page, PageDep, paginate
from coder.shared.repository import OrgScoped, scoped
from coder.tests.runner.notes.contracts import NoteCreated
from coder.tests.runner.notes.models import Base, Note
from coder.tests.runner.notes.schemas import NoteCreate, NoteRead, NoteUpdate

router = APIRouter(prefix="/v1", tags=["notes"])

Reader = Annotated[Principal, require("notes:read")]
Writer = Annotated[Principal, require("notes:write")]


def _notes(session: AsyncSession, org_id: str) -> OrgScoped[Note]:
    return OrgScoped(Note, session, org_id, "note")


@router.post("/notes", response_model=NoteRead, status_code=status.HTTP_201_CREATED)
async def create_note(body: NoteCreate, session: SessionDep, principal: Writer) -> NoteRead:
    """Create a note; emits `notes.note.created` when the request commits."""
    note = Note(org_id=principal.org_id, title=body.title, body=body.body)
    session.add(note)
    await session.flush()
    await session.refresh(note)
    await Base.events.publish(
        session,
        "notes.note.created",
        NoteCreated(title=note.title).model_dump(mode="json"),
        org_id=principal.org_id,
        subject=str(note.id),
    )
    return NoteRead.model_validate(note)


@router.get("/notes", response_model=Page[NoteRead])
async def list_notes(session: SessionDep, principal: Reader, params: PageDep) -> Page[NoteRead]:
    """This organization's notes, newest first."""
    query = scoped(Note, principal.org_id)
    rows = await paginate(session, query, (Note.created_at, Note.id), params, descending=True)
    return rows.page(NoteRead.model_validate)


@router.get("/notes/{note_id}", response_model=NoteRead)
async def get_note(note_id: uuid.UUID, session: SessionDep, principal: Reader) -> NoteRead:
    return NoteRead.model_validate(await _notes(session, principal.org_id).get(note_id, Note.id == note_id))


@router.patch("/notes/{note_id}", response_model=NoteRead)
async def update_note(
    note_id: uuid.UUID, body: NoteUpdate, session: SessionDep, principal: Writer
) -> NoteRead:
    """Change the title or body; a field left out keeps its value."""
    note = await _notes(session, principal.org_id).get(note_id, Note.id == note_id, lock=True)
    for field, value in body.model_dump(exclude_unset=True, exclude_none=True).items():
        setattr(note, field, value)
    await session.flush()
    await session.refresh(note)
    return NoteRead.model_validate(note)


@router.delete("/notes/{note_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_note(note_id: uuid.UUID, session: SessionDep, principal: Writer) -> Response:
    await _notes(session, principal.org_id).delete(note_id, Note.id == note_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
