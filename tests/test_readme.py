"""The README's quick start is exactly what CI runs (.ci/run, between the QUICKSTART markers)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_lines() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    begin = lines.index("# QUICKSTART-BEGIN")
    end = lines.index("# QUICKSTART-END")
    return [line for line in lines[begin + 1 : end] if line.strip()]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    commands = _quickstart_lines()
    assert len(commands) == 2, "the README quick start is two commands: install+run, test"
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert [line for line in block.splitlines() if line.strip()] == commands
