"""A producer stages only what its event's contract accepts (coder.shared.contracts)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coder.services.secrets.models import Base
from coder.shared import db


async def test_the_outbox_refuses_a_payload_its_contract_refuses(database_url: str) -> None:
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn, AsyncSession(conn) as session:
            with pytest.raises(ValidationError, match="version"):
                await Base.events.publish(
                    session, "secrets.secret.rotated", {"project": "p", "environment": "e", "path": "a"}
                )
            with pytest.raises(ValueError, match="has no contract"):
                await Base.events.publish(session, "secrets.secret.vanished", {})
            staged = await Base.events.publish(
                session,
                "secrets.secret.rotated",
                {"project": "p", "environment": "e", "path": "a", "version": 2},
            )
            count = (
                select(func.count())
                .select_from(Base.events.outbox)
                .where(Base.events.outbox.c.event_id == staged.id)
            )
            assert (await session.execute(count)).scalar_one() == 1
            await session.rollback()
    finally:
        await engine.dispose()
