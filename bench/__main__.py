"""Run every benchmark (or those named): `python -P -m coder.bench [--json] [events usage gateway ...]`.

Each benchmark prints its own side-by-side tables, then declares its headline figures with
`support.result`. At the end: one table of those figures against their goals, or with `--json` one
JSON object per benchmark per line on stdout (the benchmarks' own output then goes to stderr).
A benchmark that fails (a baseline that would not start, a crash) is reported as failed, the others
still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path
from typing import Any

from coder.bench import support
from coder.bench.support import Result


def available() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )


def run(name: str) -> tuple[list[Result], str | None]:
    """Run one benchmark: the figures it declared, and why it failed (None: it did not)."""
    support.CURRENT = name
    del support.RESULTS[:]
    try:
        module = importlib.import_module(f"coder.bench.bench_{name}")
        asyncio.run(module.main())
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        return [], " ".join(str(exc).split())[:200] or type(exc).__name__
    finally:
        support.CURRENT = ""
    return list(support.RESULTS), None


def _figure(value: float, unit: str) -> str:
    return f"{value:.3f}x" if unit == "x" else f"{value:,.2f} {unit}"


def summary(ran: dict[str, tuple[list[Result], str | None]]) -> str:
    """One table: benchmark, figure, measured, goal, met or not."""
    rows = [("benchmark", "figure", "measured", "goal", "met")]
    for bench, (results, error) in ran.items():
        if error is not None:
            rows.append((bench, "-", "FAILED", "-", error[:60]))
        elif not results:
            rows.append((bench, "-", "(no headline figure)", "-", "-"))
        for r in results:
            goal = (
                "-" if r.goal is None else f"{'>=' if r.higher_is_better else '<='} {_figure(r.goal, r.unit)}"
            )
            met = {None: "-", True: "yes", False: "NO"}[r.met]
            rows.append((bench, r.name, _figure(r.value, r.unit), goal, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def as_json(bench: str, results: list[Result], error: str | None) -> dict[str, Any]:
    """`{"bench": ..., <figure>: <value>, ..., "goals": {<figure>: {"goal", "met"}}}`, or an "error"."""
    out: dict[str, Any] = {"bench": bench}
    if error is not None:
        out["error"] = error
        return out
    out.update({r.name: r.value for r in results})
    out["goals"] = {
        r.name: {"goal": r.goal, "higher_is_better": r.higher_is_better, "met": r.met}
        for r in results
        if r.goal is not None
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -P -m coder.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per benchmark per line")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of: {', '.join(available())}")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in available():
            parser.error(f"unknown benchmark {name!r}; available: {', '.join(available())}")
    ran: dict[str, tuple[list[Result], str | None]] = {}
    out = sys.stdout
    # With --json, stdout carries the JSON lines only.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        for name in args.names or available():
            print(f"\n=== {name} ===", flush=True)
            ran[name] = run(name)
            if args.json:
                print(json.dumps(as_json(name, *ran[name])), file=out, flush=True)
    if not args.json:
        print(f"\n=== summary ===\n{summary(ran)}")
    return 1 if any(error is not None for _, error in ran.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
