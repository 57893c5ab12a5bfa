"""Database errors keep stored values out of the logs: statement parameters (hidden by the engine) and
PostgreSQL's DETAIL, which echoes the refused row (dropped by the log formatter)."""

from __future__ import annotations

import logging
import sys
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from coder.shared import db
from coder.shared.telemetry import json_formatter

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$bm90LWEtcmVhbC1oYXNo"


async def test_a_refused_insert_logs_no_stored_values(database_url: str) -> None:
    engine = db.create_engine(database_url, pool_size=1)
    email = f"leak-{uuid.uuid4().hex[:8]}@example.com"
    # No `email_verified`: a NOT NULL violation, whose DETAIL lists the whole row.
    insert = text(
        "INSERT INTO gateway_user (id, email, name, password_hash) VALUES (:id, :email, 'x', :hash)"
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(IntegrityError) as failed:
                await conn.execute(insert, {"id": uuid.uuid4(), "email": email, "hash": HASH})
            await conn.rollback()
    finally:
        await engine.dispose()
    assert "parameters hidden" in str(failed.value)
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "insert failed", None, sys.exc_info())
    record.exc_info = (type(failed.value), failed.value, failed.value.__traceback__)
    logged = json_formatter().format(record)
    assert "gateway_user" in logged and "not-null constraint" in logged
    assert "$argon2" not in logged and email not in logged
