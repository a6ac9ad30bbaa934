"""The command line's shape: its commands, one meaning per flag, the error mapping."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import click
import pytest
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
    "tune-hybrid",
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


def _count_flags(minimum: int) -> list[tuple[str, str]]:
    """(command path, flag) for every option whose type is a count starting at `minimum`."""
    return sorted(
        (path, param.opts[0])
        for path, command in _commands(main).items()
        for param in command.params
        if isinstance(param, click.Option)
        and isinstance(param.type, click.IntRange)
        and param.type.min == minimum
    )


POSITIVE_COUNTS = _count_flags(1)
COUNTS_FROM_ZERO = _count_flags(0)


def test_the_counts_are_validated_on_every_command_that_takes_them() -> None:
    flags = {flag for _, flag in POSITIVE_COUNTS}
    assert {"-k", "--candidates", "--steps", "--batch-size", "--threads"} <= flags
    commands = {path for path, flag in POSITIVE_COUNTS if flag == "--batch-size"}
    assert {"adapt", "distill", "index", "teacher train"} <= commands
    assert {flag for _, flag in COUNTS_FROM_ZERO} == {
        "--pseudo-queries",
        "--validation-queries",
        "--replicas",
    }


@pytest.mark.parametrize("value", ["0", "-3"])
@pytest.mark.parametrize(("command", "flag"), POSITIVE_COUNTS)
def test_a_count_below_one_is_a_usage_error(command: str, flag: str, value: str) -> None:
    result = CliRunner().invoke(main, [*command.split(), flag, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output and "x>=1" in result.output


@pytest.mark.parametrize(("command", "flag"), COUNTS_FROM_ZERO)
def test_a_negative_count_is_a_usage_error_where_zero_means_none(command: str, flag: str) -> None:
    result = CliRunner().invoke(main, [*command.split(), flag, "-1"])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output and "x>=0" in result.output


def test_every_command_with_progress_bars_takes_one_flag_on_by_default() -> None:
    spellings = {
        (tuple(param.opts), tuple(param.secondary_opts), param.default)
        for command in _commands(main).values()
        for param in command.params
        if param.name == "progress" or "--no-progress" in getattr(param, "secondary_opts", ())
    }
    assert spellings == {(("--progress",), ("--no-progress",), True)}
    takes_it = {
        path
        for path, command in _commands(main).items()
        if any(param.name == "progress" for param in command.params)
    }
    assert {"index", "eval", "teacher train", "distill", "adapt"} <= takes_it
    assert not any(
        "--no-progress" in getattr(param, "opts", ())
        for command in _commands(main).values()
        for param in command.params
    )
