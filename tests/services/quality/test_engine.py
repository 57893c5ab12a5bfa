"""The analysis engine, the archive reader and the report parsers, without the platform."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from coder.services.quality import archives, engine, reports
from coder.shared.errors import InvalidField
from coder.tests.services.quality.factories import block


def test_duplicated_blocks_span_files_and_ignore_blanks_and_comments() -> None:
    one = block("f")
    # The same statements, re-indented differently, with a comment and blank lines between them.
    two = "# header\n\n" + one.replace("\n    total += x * 3", "\n\n    # note\n    total += x * 3").replace(
        "    t", "        t"
    )
    unique = block("g", 3)
    found = engine.duplications(
        [engine.Source("a.py", one), engine.Source("b/c.py", two), engine.Source("u.py", unique)]
    )
    assert set(found) == {"a.py", "b/c.py"}
    lines, blocks = found["a.py"]
    assert blocks == 1 and min(lines) == 1 and max(lines) == len(one.splitlines())
    lines_two, _ = found["b/c.py"]
    assert 1 not in lines_two and 2 not in lines_two  # the header comment and blank line
    # Short repeats are no duplication.
    assert engine.duplications([engine.Source("x.py", "a = 1\nb = 2\n" * 2)]) == {}


def test_new_lines_are_the_inserted_and_replaced_ones() -> None:
    before = [engine.line_hash(x) for x in ["a", "b", "c", "d"]]
    after = [engine.line_hash(x) for x in ["a", "B", "c", "new", "d  "]]  # trailing blanks ignored
    assert engine.new_lines(after, before) == [2, 4]
    assert engine.new_lines(after, None) == [1, 2, 3, 4, 5]


def test_complexity_per_function_and_the_threshold() -> None:
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(12))
    source = engine.Source(
        "m.py", f"def simple():\n    return 1\n\ndef tangled(x):\n{branches}    return -1\n"
    )
    functions, total, findings = engine.complexity(source)
    assert (functions, total) == (2, 1 + 13)
    assert [(f.rule, f.line, f.severity) for f in findings] == [("radon:cyclomatic-complexity", 4, "major")]
    assert engine.complexity(engine.Source("bad.py", "def (:\n")) == (0, 0, [])


async def test_ruff_runs_on_the_files_and_ignores_their_configuration() -> None:
    sources = [
        engine.Source("pkg/a.py", "import os\nprint(undefined)\n"),
        engine.Source("pkg/broken.py", "def f(:\n"),
        # A configuration among the files would silence everything without --isolated.
        engine.Source("ruff.toml", "[lint]\nignore = ['F']\n"),
    ]
    findings = await engine.lint(sources)
    got = {(f.path, f.rule, f.severity, f.line) for f in findings}
    assert ("pkg/a.py", "ruff:F401", "major", 1) in got
    assert ("pkg/a.py", "ruff:F821", "critical", 2) in got
    assert any(path == "pkg/broken.py" and severity == "blocker" for path, _, severity, _ in got)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("a/b.py", True),
        ("../x.py", False),
        ("/etc/passwd", False),
        ("a/./b", False),
        ("a\\b", False),
        ("", False),
    ],
)
def test_paths(path: str, ok: bool) -> None:
    assert (engine.check_path(path) is None) is ok


def _tar(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return out.getvalue()


def test_archives_keep_text_files_and_refuse_escapes() -> None:
    sources, skipped = archives.sources(
        _tar({"./src/a.py": b"x = 1\n", "img.png": b"\x89PNG\x00\x01"}, "link.py")
    )
    assert [(s.path, s.text) for s in sources] == [("src/a.py", "x = 1\n")]
    assert sorted(skipped) == ["img.png", "link.py"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("b.py", "y = 2\n")
    assert [s.path for s in archives.sources(zipped.getvalue())[0]] == ["b.py"]
    for bad in (
        _tar({"../evil.py": b"x"}),
        _tar({"/abs.py": b"x"}),
        b"not an archive",
        _tar({"bin": b"\x00"}),
    ):
        with pytest.raises(InvalidField) as caught:
            archives.sources(bad)
        assert [e["field"] for e in caught.value.errors or []] == ["archive"]


def test_junit_counts() -> None:
    report = """<testsuites><testsuite name="s">
      <testcase classname="t.A" name="ok" time="0.5"/>
      <testcase classname="t.A" name="bad" time="0.25"><failure message="x"/></testcase>
      <testcase classname="t.B" name="boom"><error/></testcase>
      <testcase classname="t.B" name="later"><skipped/></testcase>
    </testsuite></testsuites>"""
    assert reports.junit(report) == {
        "tests": 4,
        "failures": 1,
        "errors": 1,
        "skipped": 1,
        "time_ms": 750,
        "failing": [{"name": "t.A::bad", "outcome": "failure"}, {"name": "t.B::boom", "outcome": "error"}],
    }


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    "<testsuite>&lol2;</testsuite>"
)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<testsuite><testcase>", "not well-formed"),
        (BOMB, "refused XML"),
        ("<coverage/>", "root is <testsuites> or <testsuite>"),
        ('<testsuite><testcase name="a" time="NaN"/></testsuite>', "finite"),
    ],
)
def test_bad_junit_names_the_field(text: str, why: str) -> None:
    with pytest.raises(InvalidField) as caught:
        reports.junit(text, "junit")
    (error,) = caught.value.errors or []
    assert error["field"] == "junit" and why in error["message"]


def test_cobertura_lines_and_path_matching() -> None:
    report = """<coverage><sources><source>/home/ci/repo/src</source></sources><packages><package><classes>
      <class filename="pkg/m.py"><lines><line number="1" hits="3"/><line number="2" hits="0"/></lines></class>
      <class filename="pkg/m.py"><lines><line number="2" hits="1"/><line number="5" hits="0"/></lines></class>
      <class filename="other.py"><lines><line number="1" hits="0"/></lines></class>
    </classes></package></packages></coverage>"""
    coverage = reports.cobertura(report)
    assert coverage.covered["pkg/m.py"] == {1, 2} and coverage.uncovered["pkg/m.py"] == {5}
    matched = reports.match_paths(coverage.files(), coverage.sources, {"src/pkg/m.py", "x.py"})
    assert matched == {"pkg/m.py": "src/pkg/m.py"}
    with pytest.raises(InvalidField):
        reports.cobertura(
            '<coverage><packages><package><classes><class filename="a"><lines><line number="0" hits="1"/></lines></class></classes></package></packages></coverage>'
        )
