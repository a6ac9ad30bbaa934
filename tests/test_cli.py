"""The command line's shape: its commands, one meaning per flag, the error mapping."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import click
from click.testing import CliRunner

from twinbert_search.cli import main

COMMANDS = {
    "adapt",
    "bench",
    "build-default-model",
    "delete",
    "distill",
    "eval",
    "export",
    "index",
    "models",
    "opensearch",
    "quantize",
    "recipe",
    "search",
    "serve",
    "teacher",
}
# A flag spelled like another command's but meaning something else, and why it stays.
HOMONYMS = {"--index": "recipe scifact --index is an embedded index to reuse (a directory)"}


def _listed(help_text: str) -> set[str]:
    """The command names of a group's --help (continuation lines are indented deeper)."""
    rows = help_text.split("Commands:")[1].splitlines()
    return {row.split()[0] for row in rows if row.startswith("  ") and row[2] != " "}


def _commands(group: click.Group, path: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{path}{name} "))
        else:
            found[f"{path}{name}"] = command
    return found


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert _listed(result.output) == COMMANDS == set(main.commands)


def test_a_flag_has_one_parameter_name_and_type_on_every_command() -> None:
    meanings: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for command in _commands(main).values():
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in param.opts:
                    meanings[flag].add((str(param.name), type(param.type).__name__))
    assert len(meanings["--model"]) == 1 and len(meanings["--backend"]) == 1
    split = {flag: sorted(m) for flag, m in meanings.items() if len(m) > 1}
    assert set(split) == set(HOMONYMS), split


def test_a_malformed_filter_is_a_one_line_input_error(tmp_path: Path) -> None:
    args = ["search", "q", "--index-dir", str(tmp_path / "ix"), "--filter", "topic"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert result.stderr == "error: field '--filter': --filter expects FIELD=VALUE, got 'topic'\n"
    assert not (tmp_path / "ix").exists()


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twinbert_search.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _listed(done.stdout) == COMMANDS
