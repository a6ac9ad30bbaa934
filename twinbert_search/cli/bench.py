"""`twinbert-search bench`: run the benchmark suite of a source checkout (benchmarks/run.py).

The suite lives outside the package, beside the tests, so this command only finds it and
hands over the arguments (`twinbert-search bench --quick --sizes 10000`); `--help` of the
suite lists them. The main CLI registers it with one `add_command(bench)`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from twinbert_search.errors import ConfigurationError

__all__ = ["bench", "suite_script"]


def suite_script() -> Path:
    """benchmarks/run.py of the checkout this package is imported from."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
    if not script.is_file():
        raise ConfigurationError(
            f"no benchmark suite at {script}: `twinbert-search bench` needs a source checkout "
            "(git clone, pip install -e .)"
        )
    return script


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Measure encoding, rerank, search, indexing and memory; write BENCHMARKS.md."""
    script = suite_script()
    done = subprocess.run([sys.executable, str(script), *args], cwd=script.parents[1], check=False)
    if done.returncode:
        raise SystemExit(done.returncode)
