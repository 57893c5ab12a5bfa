"""Small builders for quality tests: projects, analyses and CI reports through the gateway path."""

from __future__ import annotations

from typing import Any

import httpx

from coder.tests.support.platform import Platform

API = "/api/quality/v1"

CLEAN = 'def add(a, b):\n    """Add."""\n    return a + b\n'


def block(name: str, lines: int = 12) -> str:
    """A function of `lines` distinct statements: the same text twice is a duplicated block."""
    body = "".join(f"    total += x * {i} + {len(name)}\n" for i in range(lines))
    return f"def {name}(x):\n    total = 0\n{body}    return total\n"


async def create_project(p: Platform, h: dict[str, str], key: str, **fields: Any) -> dict[str, Any]:
    response = await p.client.post(f"{API}/projects", json={"key": key, "name": key, **fields}, headers=h)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def post_analysis(
    p: Platform, h: dict[str, str], key: str, files: dict[str, str], commit: str = "c1", **ref: Any
) -> httpx.Response:
    body = {"commit": commit, "files": [{"path": k, "content": v} for k, v in files.items()], **ref}
    return await p.client.post(f"{API}/projects/{key}/analyses", json=body, headers=h)


async def analyze(
    p: Platform, h: dict[str, str], key: str, files: dict[str, str], commit: str = "c1", **ref: Any
) -> dict[str, Any]:
    response = await post_analysis(p, h, key, files, commit, **ref)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def cobertura(hits: dict[str, dict[int, int]], source: str = "/ci/repo") -> str:
    classes = "".join(
        f'<class name="{name}" filename="{name}"><lines>'
        + "".join(f'<line number="{n}" hits="{c}"/>' for n, c in sorted(lines.items()))
        + "</lines></class>"
        for name, lines in hits.items()
    )
    return (
        '<?xml version="1.0" ?><coverage version="7.6" line-rate="0.5">'
        f"<sources><source>{source}</source></sources>"
        f'<packages><package name="."><classes>{classes}</classes></package></packages></coverage>'
    )


async def put_coverage(
    p: Platform, h: dict[str, str], key: str, analysis_id: str, report: str
) -> httpx.Response:
    return await p.client.put(
        f"{API}/projects/{key}/analyses/{analysis_id}/coverage", json={"report": report}, headers=h
    )


async def gate(p: Platform, h: dict[str, str], key: str, **params: str) -> dict[str, Any]:
    response = await p.client.get(f"{API}/projects/{key}/gate", params=params, headers=h)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
