"""Every command's --help reads like a command line's: no Python types (``<list[Path]>``,
``<int range> [x>=0]``, ``<bool>``), no ``{name}``, no Python defaults, paragraphs not broken where
the source was, nothing wider than 80 columns; the commands people use first show examples, and
every example names a real command with options it has."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from toolweave.cli import app
from toolweave.cli.helptext import EXAMPLES

FIRST_HOUR = ("run", "runs list", "runs show", "runs retry", "worker", "status", "validate", "serve",
              "tools show", "jobs show", "keys create")


def _commands() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: str) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return found


def _help(path: str) -> str:
    result = CliRunner().invoke(app, [*path.split(), "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [p for p, _ in _commands()])
def test_help_shows_no_python(path: str) -> None:
    text = _help(path)
    assert not re.search(r"<(str|bool|int|float|path|Path|list\[\w+\]|\w+ range)>", text), text
    assert "x>=" not in text and "x<=" not in text and "<=x" not in text, text
    assert not re.search(r"default: (False|True|None)\b", text), text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_a_paragraph_of_help_is_not_broken_where_the_source_was() -> None:
    text = _help("")
    assert "restart any that dies" in " ".join(text.split()), text  # cluster's docstring spans two lines
    assert "restart any that\n" not in text.replace("│", "").replace(" \n", "\n").rstrip()


@pytest.mark.parametrize("path", FIRST_HOUR)
def test_the_first_hours_commands_show_examples(path: str) -> None:
    text = _help(path)
    assert "Examples:" in text
    assert f"$ toolweave {path}" in text, text


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_every_example_names_a_real_command_and_its_options(path: str) -> None:
    commands = dict(_commands())
    assert path in commands, f"EXAMPLES names {path!r}, which is no command"
    command = commands[path]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
               if param.param_type_name == "option"}
    for example in EXAMPLES[path]:
        words = shlex.split(example)
        start = words.index("toolweave")
        assert words[start + 1: start + 1 + len(path.split())] == path.split(), example
        for word in words[start + 1 + len(path.split()):]:
            if word.startswith("-"):
                assert word.split("=", 1)[0] in options, f"{example}: {word} is no option of {path}"


def test_a_range_and_a_flag_read_as_words() -> None:
    text = " ".join(_help("runs list").split())
    assert "--limit N [1 to 500]" in text, text
    assert "--json Print JSON" in text, text  # a flag takes no value
    assert "run [OPTIONS] NAME" in " ".join(_help("run").split())
