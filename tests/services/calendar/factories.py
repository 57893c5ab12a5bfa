"""Small builders for calendar tests."""

from __future__ import annotations

from typing import Any

import httpx

from coder.tests.support.platform import Platform

API = "/api/calendar/v1"


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def create_calendar(p: Platform, h: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Work", "time_zone": "UTC", **fields}
    return ok(await p.client.post(f"{API}/calendars", json=body, headers=h), 201)


async def create_event(p: Platform, h: dict[str, str], calendar_id: str, **fields: Any) -> dict[str, Any]:
    body = {"summary": "Meeting", **fields}
    return ok(await p.client.post(f"{API}/calendars/{calendar_id}/events", json=body, headers=h), 201)


async def occurrences(p: Platform, h: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(await p.client.get(f"{API}/occurrences", params=params, headers=h))[
        "items"
    ]
    return items
