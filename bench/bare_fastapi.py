"""bench_platform's baseline: uvicorn serving one FastAPI route, and nothing else imported.

A module of its own: the benchmark's module imports the bench's support and the platform's shared
code, which a bare app must not pay for (`python -P -m uvicorn coder.bench.bare_fastapi:app`).
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
