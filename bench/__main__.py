"""Run every benchmark (or those named): `python -P -m coder.bench [events usage gateway ...]`."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    available = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    chosen = sys.argv[1:] or available
    for name in chosen:
        if name not in available:
            raise SystemExit(f"unknown benchmark {name!r}; available: {', '.join(available)}")
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"coder.bench.bench_{name}")
        asyncio.run(module.main())


if __name__ == "__main__":
    main()
