"""docs/configuration.md is what `coder-platform config` writes from the settings classes, and every
setting there says what it is."""

from __future__ import annotations

import subprocess
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from coder.runner import registry
from coder.runner.configuration import _section, field_comments, reference
from coder.shared.settings import PlatformSettings, TargetSettings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "configuration.md"
CLI = str(Path(sys.executable).with_name("coder-platform"))


def test_the_committed_reference_is_what_the_generator_writes() -> None:
    assert DOCUMENT.read_text() == reference(), (
        "docs/configuration.md is stale: run `.venv/bin/coder-platform config > docs/configuration.md`"
    )


def test_the_command_prints_it_from_a_fresh_process() -> None:
    done = subprocess.run([CLI, "config"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == DOCUMENT.read_text()


def test_every_setting_says_what_it_is() -> None:
    classes: list[type[BaseSettings]] = [PlatformSettings]
    classes += [t.settings for t in registry.resolve("all").values() if t.settings is not None]
    missing = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, field in cls.model_fields.items()
        if not (field.description or field_comments(cls).get(name))
    ]
    assert not missing, f"add a comment above each of these fields (or a Field description): {missing}"


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class ExampleSettings(TargetSettings):
    """Settings of a throwaway target."""

    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")
    development_defaults: ClassVar = {"key": "dev-key"}

    # Two lines of comment
    # make one description.
    retries: int = Field(default=3, ge=0, le=10)

    # A comment a blank line above documents nothing.

    colour: Colour = Colour.RED  # the colour | of things
    mode: Literal["fast", "safe"] = Field(default="safe", description="Given, so it wins over comments")
    # Where <target> answers.
    url: str | None = Field(default=None, validation_alias="EXAMPLE_URL_OVERRIDE")
    hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["a", "b"])
    # The key.
    key: str = "dev-key"

    def unrelated(self) -> None:
        # A comment in a method is not a field's.
        value: int = 1
        del value


def test_descriptions_come_from_comments_and_field_descriptions() -> None:
    assert field_comments(ExampleSettings) == {
        "retries": "Two lines of comment make one description.",
        "colour": "the colour | of things",
        "url": "Where <target> answers.",
        "key": "The key.",
    }
    # A lint directive beside a field is no description.
    assert field_comments(PlatformSettings)["token_audience"] == "Their `aud`, likewise."
    assert _section("example", ExampleSettings).splitlines() == [
        "## example (`EXAMPLE_*`)",
        "",
        "Settings of a throwaway target.",
        "",
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
        "| `EXAMPLE_RETRIES` | int, ≥ 0, ≤ 10 | `3` | Two lines of comment make one description. |",
        "| `EXAMPLE_COLOUR` | `red` or `blue` | `red` | The colour \\| of things |",
        "| `EXAMPLE_MODE` | `fast` or `safe` | `safe` | Given, so it wins over comments |",
        "| `EXAMPLE_URL_OVERRIDE` | str | unset | Where &lt;target> answers. |",
        '| `EXAMPLE_HOSTS` | comma-separated list of str | `["a", "b"]` |  |',
        "| `EXAMPLE_KEY` | str | a development-only value, refused outside development | The key. |",
    ]
