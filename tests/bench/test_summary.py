"""`python -m coder.bench`'s plumbing: the figures benchmarks declare, the summary table, the JSON lines,
and a failed benchmark failing the run. The benchmarks themselves run under `make bench` only."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from coder.bench import __main__ as bench
from coder.bench import support


def _module(
    monkeypatch: pytest.MonkeyPatch, name: str, main: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    module = types.ModuleType(f"coder.bench.bench_{name}")
    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)


@pytest.fixture
def benches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three benchmarks: one meeting and missing goals, one with no goal, one whose baseline died."""

    async def fast() -> None:
        print("fast's own table")
        ratios = support.report("t", [("bare", 200.0, "req/s"), ("ours", 150.0, "req/s")], baseline="bare")
        support.result("rps_vs_bare", ratios["ours"], goal=0.5)
        support.result("p99_ms", 12.0, goal=10, higher_is_better=False, unit="ms")

    async def plain() -> None:
        support.result("ratio", 2.0)

    async def broken() -> None:
        support.report("t", [("bare", 0.0, "req/s"), ("ours", 150.0, "req/s")], baseline="bare")
        support.result("never", 1.0)

    for name, main in (("fast", fast), ("plain", plain), ("broken", broken)):
        _module(monkeypatch, name, main)
    monkeypatch.setattr(bench, "available", lambda: ["broken", "fast", "plain"])


@pytest.mark.usefixtures("benches")
def test_json_lines_carry_each_benchmarks_figures_and_goals(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--json", "fast", "plain"]) == 0
    out, err = capsys.readouterr()
    fast, plain = (json.loads(line) for line in out.splitlines())
    assert fast["bench"] == "fast"
    assert fast["rps_vs_bare"] == pytest.approx(0.75)
    assert fast["p99_ms"] == 12.0
    assert fast["goals"]["rps_vs_bare"] == {"goal": 0.5, "higher_is_better": True, "met": True}
    assert fast["goals"]["p99_ms"] == {"goal": 10, "higher_is_better": False, "met": False}
    assert plain == {"bench": "plain", "ratio": 2.0, "goals": {}}
    assert "fast's own table" in err  # the benchmarks' own output stays off the JSON lines


@pytest.mark.usefixtures("benches")
def test_the_summary_table_says_met_or_not_and_a_failure_fails_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench.main([]) == 1
    out = capsys.readouterr().out
    table = out.split("=== summary ===\n", 1)[1].splitlines()
    rows = [line.split() for line in table]
    assert rows[0] == ["benchmark", "figure", "measured", "goal", "met"]
    assert rows[1][:3] == ["broken", "-", "FAILED"]
    assert "baseline" in table[1] and "never" not in out
    assert rows[2] == ["fast", "rps_vs_bare", "0.750x", ">=", "0.500x", "yes"]
    assert rows[3] == ["fast", "p99_ms", "12.00", "ms", "<=", "10.00", "ms", "NO"]
    assert rows[4] == ["plain", "ratio", "2.000x", "-", "-"]
    assert support.CURRENT == ""


@pytest.mark.usefixtures("benches")
def test_a_failed_benchmark_is_an_error_line_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--json", "broken"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    failed = json.loads(line)
    assert failed["bench"] == "broken" and "never" not in failed
    assert "baseline 'bare' measured 0.0" in failed["error"]


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(["nope"])
    assert exit_.value.code == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_a_figure_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(RuntimeError, match="nan"):
        support.result("ratio", float("nan"))
