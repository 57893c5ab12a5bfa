"""Small builders for logging's tests: pushes in Loki's shape, queries, timestamps near now."""

from __future__ import annotations

import time
from typing import Any

import httpx

from coder.tests.support.platform import Platform

API = "/api/logging/v1"
SECOND = 1_000_000_000


def ns(seconds_ago: float = 0.0) -> int:
    return time.time_ns() - int(seconds_ago * SECOND)


def stream(labels: dict[str, str], *lines: str | tuple[Any, ...], at: int | None = None) -> dict[str, Any]:
    """A stream of lines one microsecond apart from `at` (default: a minute ago); a line may be
    (text, metadata) or (text, metadata, ts)."""
    start = at if at is not None else ns(60)
    values: list[list[Any]] = []
    for i, item in enumerate(lines):
        text, metadata, ts = (item, None, None) if isinstance(item, str) else (*item, None)[:3]
        value: list[Any] = [str(ts if ts is not None else start + i * 1000), text]
        if metadata is not None:
            value.append(metadata)
        values.append(value)
    return {"stream": labels, "values": values}


async def push_raw(platform: Platform, headers: dict[str, str], *streams: dict[str, Any]) -> httpx.Response:
    return await platform.client.post(f"{API}/push", json={"streams": list(streams)}, headers=headers)


async def push(platform: Platform, headers: dict[str, str], *streams: dict[str, Any]) -> dict[str, Any]:
    response = await push_raw(platform, headers, *streams)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def query_raw(platform: Platform, headers: dict[str, str], q: str, **params: Any) -> httpx.Response:
    return await platform.client.get(f"{API}/query", params={"query": q, **params}, headers=headers)


async def query(platform: Platform, headers: dict[str, str], q: str, **params: Any) -> list[dict[str, Any]]:
    response = await query_raw(platform, headers, q, **params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def lines(platform: Platform, headers: dict[str, str], q: str, **params: Any) -> list[str]:
    return [item["line"] for item in await query(platform, headers, q, **params)]
